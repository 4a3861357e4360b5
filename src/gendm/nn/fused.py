"""ReLU MLPs evaluated as one autograd node each, with gradients restricted to chosen rows.

An actor-critic update evaluates the same network on several batches that want different
gradients: SAC's critic sees ``(obs, a)`` rows whose loss trains the critic and ``(obs, pi(obs))``
rows whose loss must reach ``pi`` but not the critic; its actor sees ``next_obs`` rows that carry
no gradient and ``obs`` rows that do. Stacking those batches into one pass halves the number of
kernels and doubles the rows per matmul (SAC: bf16 update ~6.5 -> ~5.6 ms at Pendulum sizes on the
dev box; BENCHMARKS.md section 1 has the end-to-end effect).

``fused_ensemble(ens, x, dtype, weight_rows)`` and ``fused_mlp(net, x, dtype, grad_rows)`` run the
forward and hand-written backward of a ReLU MLP (an ``EnsembleMLP`` or a ``gendm.nn.mlp`` network)
with:

- weight gradients from ``weight_rows`` / ``grad_rows`` only (the other rows act as if the
  parameters were detached), so one stacked pass gives exactly the gradients of separate passes;
- ``dtype=torch.bfloat16``: hidden layers in bf16 (weights cast once per call), fused
  linear+bias+ReLU kernels on CPU (oneDNN), and the output layer in fp32 as ``fp32_head`` does:
  the same numerics as ``torch.autocast`` over the plain modules (tests compare them).

Only ReLU hidden activations without normalisation layers are supported; ``supports_fused`` says
whether a network qualifies.
"""

from __future__ import annotations

import torch
from torch import nn

from gendm.nn.ensemble import EnsembleMLP
from gendm.nn.mlp import MLP

_ALL = slice(None)


def supports_fused(net: nn.Module) -> bool:
    """True for a ReLU ``EnsembleMLP`` or a ``gendm.nn.mlp`` network of Linear and ReLU layers."""
    if isinstance(net, EnsembleMLP):
        return isinstance(net.act, nn.ReLU)
    if isinstance(net, MLP):
        kinds = [type(layer) for layer in net]
        return kinds[-1] is nn.Linear and all(
            k is (nn.Linear if i % 2 == 0 else nn.ReLU) for i, k in enumerate(kinds)
        )
    return False


def _compute_copies(params: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """``params`` in ``dtype``. Cast on every call: a fused optimiser step updates parameters without
    bumping their version counters, so a cache keyed on versions would serve stale weights."""
    return [p.detach().to(dtype) for p in params]


def _linear_relu(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(h @ weight.T + bias)``; one fused oneDNN kernel for bf16 on CPU in eager mode (inductor
    lowers that op only for constant weights, and fuses the ReLU itself)."""
    if (
        h.dtype == torch.bfloat16
        and h.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and not torch.compiler.is_compiling()
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
    want_input: bool,
    in_out_layout: bool,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]:
    """Backpropagate ``grad`` (w.r.t. the last hidden activation) through the ReLU layers.

    Returns per layer ``(weight grad, bias grad)`` from ``weight_rows`` only (weight grads as
    ``(in, out)`` when ``in_out_layout``, else ``(out, in)``) and the gradient w.r.t. the input.
    Every matmul is 2-D: batched matmuls over row-sliced operands take a slow path in bf16.
    """
    grads = []
    for i in range(len(layers) - 1, -1, -1):
        dz = torch.ops.aten.threshold_backward(grad, hidden[i + 1], 0)
        if want_weights:
            dz_rows, h_rows = dz[weight_rows], hidden[i][weight_rows]
            weight_grad = h_rows.t() @ dz_rows if in_out_layout else dz_rows.t() @ h_rows
            grads.append((weight_grad, dz_rows.sum(0, dtype=torch.float32)))
        if i > 0 or want_input:
            grad = dz @ layers[i][0]
    return grads[::-1], grad if want_input else None


class _EnsembleFn(torch.autograd.Function):
    """``x (rows, in)`` shared by every member -> ``(members, rows, out)`` fp32 (weights: (M, in, out))."""

    @staticmethod
    def forward(ctx, x, copies, weight_rows, *params):
        members = params[0].shape[0]
        h = x.to(copies[0].dtype)
        w_out, b_out = params[-2], params[-1]
        ctx.layers, ctx.hidden, ctx.last, outs = [], [], [], []
        for m in range(members):
            layers = [(w[m].t(), b[m, 0]) for w, b in zip(copies[0:-2:2], copies[1:-2:2], strict=True)]
            hidden = _hidden_forward(h, layers)
            last = hidden[-1].float()
            outs.append(torch.addmm(b_out[m], last, w_out[m]))
            ctx.layers.append(layers)
            ctx.hidden.append(hidden)
            ctx.last.append(last)
        ctx.copies, ctx.weight_rows, ctx.x_dtype = copies, weight_rows, x.dtype
        return torch.stack(outs)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        copies, rows = ctx.copies, ctx.weight_rows
        want_weights, want_input = any(ctx.needs_input_grad[3:]), ctx.needs_input_grad[0]
        param_grads = [
            torch.empty(c.shape, dtype=torch.float32, device=grad.device) if want_weights else None
            for c in copies
        ]
        grad_x = None
        for m in range(grad.shape[0]):
            g, hidden = grad[m], ctx.hidden[m]
            if want_weights:
                torch.mm(ctx.last[m][rows].t(), g[rows], out=param_grads[-2][m])
                torch.sum(g[rows], 0, out=param_grads[-1][m, 0])
            dh = g.to(hidden[-1].dtype) @ copies[-2][m].t()
            layer_grads, dx = _hidden_backward(
                dh, hidden, ctx.layers[m], rows, want_weights, want_input, in_out_layout=True
            )
            for i, (weight_grad, bias_grad) in enumerate(layer_grads):
                param_grads[2 * i][m].copy_(weight_grad)
                param_grads[2 * i + 1][m, 0].copy_(bias_grad)
            if want_input:
                grad_x = dx if grad_x is None else grad_x + dx
        if grad_x is not None:
            grad_x = grad_x.to(ctx.x_dtype)
        return (grad_x, None, None, *param_grads)


class _MLPFn(torch.autograd.Function):
    """``x (rows, in) -> (rows, out)`` fp32 for an ``nn.Linear`` stack (weights: (out, in))."""

    @staticmethod
    def forward(ctx, x, copies, grad_rows, *params):
        layers = list(zip(copies[0:-2:2], copies[1:-2:2], strict=True))
        hidden = _hidden_forward(x.to(copies[0].dtype), layers)
        last = hidden[-1].float()
        ctx.layers, ctx.hidden, ctx.last, ctx.copies = layers, hidden, last, copies
        ctx.grad_rows, ctx.x_shape, ctx.x_dtype = grad_rows, x.shape, x.dtype
        return torch.addmm(params[-1], last, params[-2].t())

    @staticmethod
    def backward(ctx, grad):
        rows, copies = ctx.grad_rows, ctx.copies
        want_weights, want_input = any(ctx.needs_input_grad[3:]), ctx.needs_input_grad[0]
        grad = grad[rows].contiguous()
        hidden = [h[rows] for h in ctx.hidden]
        param_grads: list[torch.Tensor | None] = [None] * len(copies)
        if want_weights:
            param_grads[-2] = grad.t() @ ctx.last[rows]
            param_grads[-1] = grad.sum(0)
        dh = grad.to(hidden[-1].dtype) @ copies[-2]
        layer_grads, dx = _hidden_backward(
            dh, hidden, ctx.layers, _ALL, want_weights, want_input, in_out_layout=False
        )
        for i, (weight_grad, bias_grad) in enumerate(layer_grads):
            param_grads[2 * i], param_grads[2 * i + 1] = weight_grad.float(), bias_grad
        grad_x = None
        if want_input:
            grad_x = torch.zeros(ctx.x_shape, dtype=ctx.x_dtype, device=grad.device)
            grad_x[rows] = dx.to(ctx.x_dtype)
        return (grad_x, None, None, *param_grads)


def _params(layers: nn.Module) -> list[torch.Tensor]:
    return [t for layer in layers if hasattr(layer, "weight") for t in (layer.weight, layer.bias)]


def fused_ensemble(
    ens: EnsembleMLP, x: torch.Tensor, dtype: torch.dtype = torch.float32, weight_rows: slice = _ALL
) -> torch.Tensor:
    """``ens(x)`` for a shared input ``x (rows, in)`` -> ``(members, rows, out)`` in fp32, as one node.

    Parameter gradients come from ``weight_rows`` only; gradients reach ``x`` from every row.
    """
    if not supports_fused(ens) or x.dim() != 2:
        raise ValueError("fused_ensemble needs a ReLU EnsembleMLP and a shared 2-D input (rows, in).")
    params = _params(ens.layers)
    return _EnsembleFn.apply(x, _compute_copies(params, dtype), weight_rows, *params)


def fused_mlp(
    net: MLP, x: torch.Tensor, dtype: torch.dtype = torch.float32, grad_rows: slice = _ALL
) -> torch.Tensor:
    """``net(x)`` for ``x (rows, in)`` -> ``(rows, out)`` in fp32, as one node.

    Only ``grad_rows`` carry gradients (to the parameters and to ``x``); the other rows' outputs
    are treated as detached.
    """
    if not supports_fused(net) or x.dim() != 2:
        raise ValueError("fused_mlp needs a gendm.nn.mlp network of Linear and ReLU layers and a 2-D input.")
    params = _params(net)
    return _MLPFn.apply(x, _compute_copies(params, dtype), grad_rows, *params)
