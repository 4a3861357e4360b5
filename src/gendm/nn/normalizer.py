"""Fixed affine normalisation fitted once on a dataset, held as buffers so checkpoints carry it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Normalizer(nn.Module):
    """``(x - mean) / std`` per feature; the identity until ``fit`` is called.

    ``fit(data, eps)`` sets ``std = data.std(0) + eps`` (TD3+BC's and d3rlpy's
    ``StandardObservationScaler`` convention, eps = 1e-3), so constant features stay finite.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @torch.no_grad()
    def fit(self, data: np.ndarray | torch.Tensor, eps: float = 1e-3) -> None:
        data = torch.as_tensor(data, dtype=torch.float64)
        self.mean.copy_(data.mean(0))
        self.std.copy_(data.std(0, correction=0) + eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean
