"""Normalisation for offline learning: observation mean/std and action scaling to [-1, 1].

``Normalizer`` (observations; ``fit(data, eps)`` sets ``std = data.std(0) + eps``) lives in
``gendm.nn.normalizer`` and is re-exported here; ``ActionScaler`` maps a bounded Box action space onto
[-1, 1] and back (the action scaling of every agent). Both are ``torch.nn.Module`` with their
statistics as buffers, so ``state_dict()`` holds plain tensors that go into gendm checkpoints
(safetensors), ``.to(device)`` moves them, and an agent can list them among its parts.
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
    """Affine map between a bounded Box action space and [-1, 1], the one every agent with a Box
    action space uses (tanh-squashed actors, generative policies): ``unscale(a) = a * half_range +
    center`` maps [-1, 1] onto [low, high], ``scale`` is its inverse. Accepts numpy arrays or tensors
    and returns the same kind.

    ``low`` and ``high`` are the state (buffers in ``state_dict``); ``half_range = (high - low) / 2``
    and ``center = (high + low) / 2`` are derived from them, recomputed after ``load_state_dict``.
    """

    low: torch.Tensor
    high: torch.Tensor
    half_range: torch.Tensor
    center: torch.Tensor

    def __init__(self, low: Array, high: Array) -> None:
        super().__init__()
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ConfigError(
                "ActionScaler needs finite Box bounds; this action space is unbounded. Squashed and "
                "generative policies act in [-1, 1] and need a bounded Box (or, offline, bounds fitted "
                "on the dataset's actions, as Diffusion Policy does)."
            )
        if not (high > low).all():
            raise ConfigError("ActionScaler needs high > low in every dimension.")
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())
        self.register_buffer("half_range", torch.empty_like(low), persistent=False)
        self.register_buffer("center", torch.empty_like(low), persistent=False)
        self._derive()
        self.register_load_state_dict_post_hook(_rederive)

    @torch.no_grad()
    def _derive(self) -> None:
        self.half_range.copy_((self.high - self.low) / 2)
        self.center.copy_((self.high + self.low) / 2)

    @classmethod
    def from_space(cls, space: gym.Space) -> ActionScaler:
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"ActionScaler needs a Box action space, got {space}.")
        return cls(space.low, space.high)

    def scale(self, action: Array, clip: bool = False) -> Array:
        """Env action in [low, high] -> [-1, 1]: ``(action - center) / half_range``, then clipped to
        [-1, 1] if ``clip``."""
        scaled = (action - _like(action, self.center)) / _like(action, self.half_range)
        if clip:
            return np.clip(scaled, -1, 1) if isinstance(scaled, np.ndarray) else scaled.clamp(-1, 1)
        return scaled

    def unscale(self, action: Array, clip: bool = False) -> Array:
        """[-1, 1] -> env action in [low, high]: ``action * half_range + center``, the action clipped to
        [-1, 1] first if ``clip``."""
        if clip:
            action = np.clip(action, -1, 1) if isinstance(action, np.ndarray) else action.clamp(-1, 1)
        return action * _like(action, self.half_range) + _like(action, self.center)


def _rederive(module: ActionScaler, _incompatible_keys: object) -> None:
    module._derive()


__all__ = ["ActionScaler", "Normalizer"]
