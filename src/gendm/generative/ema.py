"""Exponential moving average of a model's weights (the weights diffusion models sample with)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen shadow copy of ``model`` updated as ``shadow <- shadow + (1 - decay_t) (model - shadow)``.

    ``decay_t = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the warm-up of Diffusion Policy and
    many diffusion codebases), so early averages are not dominated by the random initialisation.
    Sample with ``ema.module``; ``state_dict`` holds the shadow weights and the update count.
    """

    def __init__(self, model: nn.Module, decay: float = 0.995) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._src = [p for p in model.parameters()]
        self._dst = [p for p in self.module.parameters()]
        self._src_buffers = list(model.buffers())
        self._dst_buffers = list(self.module.buffers())

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._dst, self._src, 1.0 - decay)
        for d, s in zip(self._dst_buffers, self._src_buffers):
            d.copy_(s)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
