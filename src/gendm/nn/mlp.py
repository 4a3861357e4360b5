"""Plain multilayer perceptrons."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU, "elu": nn.ELU}


def mlp(
    in_dim: int,
    out_dim: int,
    hidden: Sequence[int] = (256, 256),
    activation: str = "relu",
    layer_norm: bool = False,
) -> nn.Sequential:
    """``in_dim -> hidden... -> out_dim`` with ``activation`` between layers, none at the output."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), *([nn.LayerNorm(b)] if layer_norm else []), act()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)
