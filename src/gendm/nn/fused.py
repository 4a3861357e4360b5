"""ReLU MLPs with a hand-written backward and gradients restricted to chosen rows.

An actor-critic update evaluates the same network on several batches that want different
gradients: SAC's critic sees ``(obs, a)`` rows whose loss trains the critic and ``(obs, pi(obs))``
rows whose loss must reach ``pi`` but not the critic; its actor sees ``next_obs`` rows that carry
no gradient and ``obs`` rows that do. Stacking those batches into one pass halves the number of
kernels and doubles the rows per matmul. ``gendm.agents.sac_handgrad`` (SAC's speed path, beside the
autograd reference in ``gendm.agents.sac``) is built on these functions:

- ``ensemble_forward`` / ``ensemble_backward`` (an ``EnsembleMLP``) and ``mlp_forward`` /
  ``mlp_backward`` (a ``gendm.nn.mlp`` network) run the network forward, keeping what the backward
  needs, and backward by hand: weight gradients from chosen rows only (the other rows act as if the
  parameters were detached) and input gradients for chosen rows only, so one stacked pass gives
  exactly the gradients of separate passes. ``layer_params`` lists a network's weights and biases.
- ``cast_params(params, torch.bfloat16)``: hidden layers in bf16 (weights cast on every call), fused
  linear+bias+ReLU kernels on CPUs with native bf16 (oneDNN, chosen by
  ``gendm.core.precision.native_bf16``; addmm + ReLU elsewhere), and the output layer in fp32 as
  ``fp32_head`` does: the same numerics as ``torch.autocast`` over the plain modules (tests compare
  them).

Only ReLU hidden activations without normalisation or dropout layers are covered.
"""

from __future__ import annotations

import torch
from torch import nn

from gendm.core.precision import native_bf16

_ALL = slice(None)


def cast_params(params: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """``params`` in ``dtype``. Cast on every call: a fused optimiser step updates parameters without
    bumping their version counters, so a cache keyed on versions would serve stale weights."""
    return [p.detach().to(dtype) for p in params]


def _linear_relu(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(h @ weight.T + bias)``; one fused oneDNN kernel for bf16 on a CPU with native bf16 in
    eager mode (inductor lowers that op only for constant weights, and fuses the ReLU itself). oneDNN
    cannot build that kernel on a CPU without AVX512-BF16/AMX, so elsewhere it is addmm + ReLU."""
    if (
        h.dtype == torch.bfloat16
        and h.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and not torch.compiler.is_compiling()
        and native_bf16(h.device)
    ):
        return torch.ops.mkldnn._linear_pointwise(h, weight, bias, "relu", [], "")
    return torch.addmm(bias, h, weight.t()).relu_()


def _hidden_forward(x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """The input and every hidden activation of one MLP; ``layers``: ``(weight (out, in), bias)``."""
    hidden = [x]
    for weight, bias in layers:
        hidden.append(_linear_relu(hidden[-1], weight, bias))
    return hidden


def _hidden_backward(
    grad: torch.Tensor,
    hidden: list[torch.Tensor],
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    weight_rows: slice,
    want_weights: bool,
    input_rows: slice | None,
    in_out_layout: bool,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]:
    """Backpropagate ``grad`` (w.r.t. the last hidden activation) through the ReLU layers.

    Returns per layer ``(weight grad, bias grad)`` from ``weight_rows`` only (weight grads as
    ``(in, out)`` when ``in_out_layout``, else ``(out, in)``) and the gradient w.r.t. the input
    rows ``input_rows`` (None: no input gradient).
    Every matmul is 2-D: batched matmuls over row-sliced operands take a slow path in bf16.
    """
    grads = []
    grad_x = None
    for i in range(len(layers) - 1, -1, -1):
        dz = torch.ops.aten.threshold_backward(grad, hidden[i + 1], 0)
        if want_weights:
            dz_rows, h_rows = dz[weight_rows], hidden[i][weight_rows]
            weight_grad = h_rows.t() @ dz_rows if in_out_layout else dz_rows.t() @ h_rows
            grads.append((weight_grad, dz_rows.sum(0)))  # bf16 sums accumulate in fp32
        if i > 0:
            grad = dz @ layers[i][0]
        elif input_rows is not None:
            grad_x = dz[input_rows] @ layers[i][0]
    return grads[::-1], grad_x


def _head_input_grad(grad: torch.Tensor, weight_in_out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``grad (rows, out) @ weight_in_out.T`` in ``dtype``; a broadcast product for one output (a
    matmul with an inner dimension of 1 takes a slow path on CPU)."""
    grad = grad.to(dtype)
    return grad * weight_in_out.t() if weight_in_out.shape[-1] == 1 else grad @ weight_in_out.t()


def ensemble_forward(
    x: torch.Tensor, copies: list[torch.Tensor], params: list[torch.Tensor]
) -> tuple[torch.Tensor, list]:
    """An ``EnsembleMLP`` on a shared ``x (rows, in)`` -> ``(members, rows, out)`` fp32, and what
    ``ensemble_backward`` needs. ``params``: the layers' weights ``(M, in, out)`` and
    biases ``(M, 1, out)`` in order; ``copies``: the same in the compute dtype (``cast_params``)."""
    h = x.to(copies[0].dtype)
    w_out, b_out = params[-2], params[-1]
    saved, outs = [], []
    for m in range(params[0].shape[0]):
        layers = [(w[m].t(), b[m, 0]) for w, b in zip(copies[0:-2:2], copies[1:-2:2], strict=True)]
        hidden = _hidden_forward(h, layers)
        last = hidden[-1].float()
        outs.append(torch.addmm(b_out[m], last, w_out[m]))
        saved.append((layers, hidden, last))
    return torch.stack(outs), saved


def ensemble_backward(
    saved: list,
    copies: list[torch.Tensor],
    grad: torch.Tensor,
    weight_rows: slice = _ALL,
    want_weights: bool = True,
    input_rows: slice | None = None,
) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
    """Gradients of ``(grad * out).sum()`` for ``out, saved = ensemble_forward(...)``: fp32
    parameter gradients from ``weight_rows`` only (None without ``want_weights``) and the input
    gradient of ``input_rows``, summed over members (None if ``input_rows`` is None)."""
    param_grads = None
    if want_weights:
        param_grads = [torch.empty(c.shape, dtype=torch.float32, device=grad.device) for c in copies]
    grad_x = None
    for m, (layers, hidden, last) in enumerate(saved):
        g = grad[m]
        if param_grads is not None:
            torch.mm(last[weight_rows].t(), g[weight_rows], out=param_grads[-2][m])
            torch.sum(g[weight_rows], 0, out=param_grads[-1][m, 0])
        dh = _head_input_grad(g, copies[-2][m], hidden[-1].dtype)
        layer_grads, dx = _hidden_backward(
            dh, hidden, layers, weight_rows, want_weights, input_rows, in_out_layout=True
        )
        if param_grads is not None:
            for i, (weight_grad, bias_grad) in enumerate(layer_grads):
                param_grads[2 * i][m].copy_(weight_grad)
                param_grads[2 * i + 1][m, 0].copy_(bias_grad)
        if dx is not None:
            grad_x = dx if grad_x is None else grad_x + dx
    return param_grads, grad_x


def mlp_forward(
    x: torch.Tensor, copies: list[torch.Tensor], params: list[torch.Tensor]
) -> tuple[torch.Tensor, tuple]:
    """An ``nn.Linear``/ReLU stack on ``x (rows, in)`` -> ``(rows, out)`` fp32, and what
    ``mlp_backward`` needs. ``params``: weights ``(out, in)`` and biases in order; ``copies``: the
    same in the compute dtype."""
    layers = list(zip(copies[0:-2:2], copies[1:-2:2], strict=True))
    hidden = _hidden_forward(x.to(copies[0].dtype), layers)
    last = hidden[-1].float()
    return torch.addmm(params[-1], last, params[-2].t()), (layers, hidden, last)


def mlp_backward(
    saved: tuple,
    copies: list[torch.Tensor],
    grad: torch.Tensor,
    rows: slice = _ALL,
    want_weights: bool = True,
    want_input: bool = False,
) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
    """Gradients of ``(grad * out[rows]).sum()`` for ``out, saved = mlp_forward(...)`` (``grad``
    covers ``rows`` only): fp32 parameter gradients (None without ``want_weights``) and, with
    ``want_input``, the gradient w.r.t. ``x[rows]``."""
    layers, hidden, last = saved
    hidden = [h[rows] for h in hidden]
    param_grads: list[torch.Tensor] | None = None
    if want_weights:
        param_grads = [grad.t() @ last[rows], grad.sum(0)]
    dh = _head_input_grad(grad, copies[-2].t(), hidden[-1].dtype)
    layer_grads, dx = _hidden_backward(
        dh, hidden, layers, _ALL, want_weights, _ALL if want_input else None, in_out_layout=False
    )
    if param_grads is not None:
        front = [g.float() for layer_grad in layer_grads for g in layer_grad]
        param_grads = front + param_grads
    return param_grads, dx


def layer_params(layers: nn.Module) -> list[torch.Tensor]:
    """The weight and bias of every layer of ``layers`` that has them, in order."""
    return [t for layer in layers if hasattr(layer, "weight") for t in (layer.weight, layer.bias)]
