"""ReLU MLPs evaluated as one autograd node each, with gradients restricted to chosen rows.

An actor-critic update evaluates the same network on several batches that want different
gradients: SAC's critic sees ``(obs, a)`` rows whose loss trains the critic and ``(obs, pi(obs))``
rows whose loss must reach ``pi`` but not the critic; its actor sees ``next_obs`` rows that carry
no gradient and ``obs`` rows that do. Stacking those batches into one pass halves the number of
kernels, and on a CPU at batch 256 the per-kernel cost, not the arithmetic, is much of an update.

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


class _EnsembleFn(torch.autograd.Function):
    """``x (rows, in)`` shared by every member -> ``(members, rows, out)`` fp32 (weights: (M, in, out))."""

    @staticmethod
    def forward(ctx, x, copies, weight_rows, *params):
        members, dtype = params[0].shape[0], copies[0].dtype
        h = x.to(dtype).expand(members, *x.shape)
        hidden = [h]
        for w, b in zip(copies[0:-2:2], copies[1:-2:2], strict=True):
            h = torch.baddbmm(b, h, w).relu_()
            hidden.append(h)
        last = h.float()
        w_out, b_out = params[-2], params[-1]
        out = torch.stack([torch.addmm(b_out[m], last[m], w_out[m]) for m in range(members)])
        ctx.hidden, ctx.last, ctx.copies, ctx.x_dtype = hidden, last, copies, x.dtype
        ctx.weight_rows = weight_rows
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        hidden, copies, rows = ctx.hidden, ctx.copies, ctx.weight_rows
        n_layers = len(copies) // 2
        want_weights = any(ctx.needs_input_grad[3:])
        grads: list[torch.Tensor | None] = [None] * (2 * n_layers)
        if want_weights:
            g, last = grad[:, rows], ctx.last[:, rows]
            grads[-2] = torch.stack([last[m].t() @ g[m] for m in range(g.shape[0])])
            grads[-1] = g.sum(1, keepdim=True)
        # d(out)/d(last hidden) is an outer product; a batched matmul over K=out_dim forms it fastest.
        dh = torch.bmm(grad.to(hidden[-1].dtype), copies[-2].transpose(1, 2))
        for i in range(n_layers - 2, -1, -1):
            dz = torch.ops.aten.threshold_backward(dh, hidden[i + 1], 0)
            if want_weights:
                grads[2 * i] = torch.bmm(hidden[i][:, rows].transpose(1, 2), dz[:, rows]).float()
                grads[2 * i + 1] = dz[:, rows].sum(1, keepdim=True, dtype=torch.float32)
            if i > 0 or ctx.needs_input_grad[0]:
                dh = torch.bmm(dz, copies[2 * i].transpose(1, 2))
        grad_x = dh.sum(0).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        return (grad_x, None, None, *grads)


class _MLPFn(torch.autograd.Function):
    """``x (rows, in) -> (rows, out)`` fp32 for an ``nn.Linear`` stack (weights: (out, in))."""

    @staticmethod
    def forward(ctx, x, copies, grad_rows, *params):
        dtype = copies[0].dtype
        h = x.to(dtype)
        hidden = [h]
        for w, b in zip(copies[0:-2:2], copies[1:-2:2], strict=True):
            h = _linear_relu(h, w, b)
            hidden.append(h)
        last = h.float()
        out = torch.addmm(params[-1], last, params[-2].t())
        ctx.hidden, ctx.last, ctx.copies, ctx.x_dtype = hidden, last, copies, x.dtype
        ctx.grad_rows = grad_rows
        return out

    @staticmethod
    def backward(ctx, grad):
        rows, copies = ctx.grad_rows, ctx.copies
        hidden = [h[rows] for h in ctx.hidden]
        grad = grad[rows].contiguous()
        n_layers = len(copies) // 2
        want_weights = any(ctx.needs_input_grad[3:])
        grads: list[torch.Tensor | None] = [None] * (2 * n_layers)
        if want_weights:
            grads[-2] = grad.t() @ ctx.last[rows]
            grads[-1] = grad.sum(0)
        dh = grad.to(hidden[-1].dtype) @ copies[-2]
        for i in range(n_layers - 2, -1, -1):
            dz = torch.ops.aten.threshold_backward(dh, hidden[i + 1], 0)
            if want_weights:
                grads[2 * i] = (dz.t() @ hidden[i]).float()
                grads[2 * i + 1] = dz.sum(0, dtype=torch.float32)
            if i > 0 or ctx.needs_input_grad[0]:
                dh = dz @ copies[2 * i]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.zeros(ctx.hidden[0].shape, dtype=ctx.x_dtype, device=grad.device)
            grad_x[rows] = dh.to(ctx.x_dtype)
        return (grad_x, None, None, *grads)


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
