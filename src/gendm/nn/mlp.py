"""Plain multilayer perceptrons."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "mish": nn.Mish,
}


def fp32_head(layer: nn.Module, x: torch.Tensor, *args) -> torch.Tensor:
    """Run an output layer in fp32 even under bf16 autocast, so values and TD errors keep full precision."""
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return layer(x.float(), *args)
    return layer(x, *args)


class MLP(nn.Sequential):
    """``in_dim -> hidden... -> out_dim``; the output layer runs in fp32 under autocast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in list(self)[:-1]:
            x = layer(x)
        return fp32_head(self[-1], x)


def mlp(
    in_dim: int,
    out_dim: int,
    hidden: Sequence[int] = (256, 256),
    activation: str = "relu",
    layer_norm: bool = False,
) -> MLP:
    """``in_dim -> hidden... -> out_dim`` with ``activation`` between layers, none at the output."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), *([nn.LayerNorm(b)] if layer_norm else []), act()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return MLP(*layers)
