"""Normalisation for offline learning: observation mean/std and action scaling to [-1, 1].

``Normalizer`` (observations; ``fit(data, eps)`` sets ``std = data.std(0) + eps``) lives in
``gendm.nn.normalizer`` and is re-exported here; ``ActionScaler`` maps a bounded Box action space onto
[-1, 1] and back. Both are ``torch.nn.Module`` with their statistics as buffers, so ``state_dict()``
holds plain tensors that go into gendm checkpoints (safetensors), ``.to(device)`` moves them, and an
agent can list them among its parts.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from gendm.core.errors import ConfigError
from gendm.nn.normalizer import Normalizer

Array = np.ndarray | torch.Tensor


def _like(x: Array, t: torch.Tensor) -> Array:
    """``t`` as the same kind (numpy or torch, device) as ``x``."""
    if isinstance(x, np.ndarray):
        return t.cpu().numpy()
    return t.to(x.device)


class ActionScaler(nn.Module):
    """Affine map between a bounded Box action space and [-1, 1] (LeRobot / Diffusion Policy's action
    contract): ``scale(low) = -1``, ``scale(high) = 1``, ``unscale`` is its inverse. Accepts numpy
    arrays or tensors and returns the same kind."""

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, low: Array, high: Array) -> None:
        super().__init__()
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ConfigError(
                "ActionScaler needs finite Box bounds; this action space is unbounded. Use a Normalizer "
                "fitted on the dataset's actions instead."
            )
        if not (high > low).all():
            raise ConfigError("ActionScaler needs high > low in every dimension.")
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())

    @classmethod
    def from_space(cls, space: gym.Space) -> ActionScaler:
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"ActionScaler needs a Box action space, got {space}.")
        return cls(space.low, space.high)

    def scale(self, action: Array) -> Array:
        """Env action in [low, high] -> [-1, 1]."""
        low, high = _like(action, self.low), _like(action, self.high)
        return 2 * (action - low) / (high - low) - 1

    def unscale(self, action: Array) -> Array:
        """[-1, 1] -> env action in [low, high]."""
        low, high = _like(action, self.low), _like(action, self.high)
        return low + (action + 1) * (high - low) / 2


__all__ = ["ActionScaler", "Normalizer"]
