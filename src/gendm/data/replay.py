"""Preallocated replay buffer on the device, terminations and truncations kept apart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from gendm.core.checkpoint import load_checkpoint, save_checkpoint
from gendm.core.errors import CheckpointError, DataError


class Batch(NamedTuple):
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminations: torch.Tensor
    """1.0 where the episode ended in a terminal state (no bootstrap)."""
    truncations: torch.Tensor
    """1.0 where the episode was cut by a time limit (bootstrap from next_obs)."""


class ReplayBuffer:
    """A ring buffer of transitions stored as preallocated tensors on ``device``.

    ``add`` writes a batch of transitions (one per sub-env); ``sample`` draws uniform indices with
    ``torch.randint`` on the device, so sampling never leaves the device.
    """

    _FIELDS = ("obs", "next_obs", "actions", "rewards", "terminations", "truncations")

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        device: str | torch.device = "cpu",
        obs_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.float32,
        seed: int | None = None,
    ) -> None:
        if capacity < 1:
            raise DataError(f"ReplayBuffer capacity must be >= 1, got {capacity}.")
        self.capacity, self.device = int(capacity), torch.device(device)
        self.obs_shape, self.action_shape = tuple(obs_shape), tuple(action_shape)
        kw = {"device": self.device}
        self.obs = torch.empty((capacity, *obs_shape), dtype=obs_dtype, **kw)
        self.next_obs = torch.empty((capacity, *obs_shape), dtype=obs_dtype, **kw)
        self.actions = torch.empty((capacity, *action_shape), dtype=action_dtype, **kw)
        self.rewards = torch.empty(capacity, dtype=torch.float32, **kw)
        self.terminations = torch.empty(capacity, dtype=torch.float32, **kw)
        self.truncations = torch.empty(capacity, dtype=torch.float32, **kw)
        self.pos, self.size = 0, 0
        # On the CPU, ``add`` writes through numpy views of the same memory: one small write per
        # field then costs ~1 us instead of a torch dispatch and a tensor conversion (~7 us each).
        self._host = _numpy_views(self._tensors()) if self.device.type == "cpu" else {}
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, terminations, truncations) -> None:
        """Append ``n`` transitions (leading dim n); arrays or tensors, copied onto the device."""
        n = len(obs)
        end = self.pos + n
        idx = slice(self.pos, end) if end <= self.capacity else np.arange(self.pos, end) % self.capacity
        values = (obs, next_obs, actions, rewards, terminations, truncations)
        for name, value in zip(self._FIELDS, values, strict=True):
            store = self._host.get(name, getattr(self, name))
            shape, got = (n, *store.shape[1:]), _shape(value)
            if got != shape and (name == "obs" or math.prod(got) != math.prod(shape)):
                raise DataError(f"ReplayBuffer.add: {name} has shape {got}, buffer expects {shape}.")
            if name in self._host:
                store[idx] = _to_numpy(value).reshape(shape)
            else:
                store[idx] = torch.as_tensor(value, device=self.device).to(store.dtype).reshape(shape)
        self.pos = end % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        if self.size == 0:
            raise DataError("ReplayBuffer.sample called on an empty buffer.")
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=self.generator)
        return Batch(
            self.obs.index_select(0, idx),
            self.actions.index_select(0, idx),
            self.rewards.index_select(0, idx),
            self.next_obs.index_select(0, idx),
            self.terminations.index_select(0, idx),
            self.truncations.index_select(0, idx),
        )

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self._tensors().values())

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self._FIELDS}

    def state_dict(self) -> dict:
        """The filled part (in insertion order is not needed: uniform sampling), plus counters."""
        return {k: v[: self.size] for k, v in self._tensors().items()} | {
            "pos": self.pos,
            "size": self.size,
            "capacity": self.capacity,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore saved transitions; the capacity may differ if it holds them all (a longer run resumed)."""
        size = int(state["size"])
        if size > self.capacity or tuple(state["obs"].shape[1:]) != self.obs_shape:
            raise CheckpointError(
                f"Saved buffer ({size} transitions, obs {tuple(state['obs'].shape[1:])}) does not fit this "
                f"buffer (capacity {self.capacity}, obs {self.obs_shape})."
            )
        for k, v in self._tensors().items():
            v[:size] = state[k].to(self.device)
        same = int(state["capacity"]) == self.capacity
        self.pos, self.size = (int(state["pos"]) if same else size % self.capacity), size
        self.generator.set_state(state["generator"].cpu())

    def save(self, directory: str | Path) -> None:
        save_checkpoint(directory, self.state_dict(), {"kind": "replay_buffer"})

    def load(self, directory: str | Path) -> None:
        state, _ = load_checkpoint(directory, self.device)
        self.load_state_dict(state)


def _numpy_views(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Numpy views of CPU tensors whose dtype numpy has (all or none: one write path per buffer)."""
    try:
        return {k: t.numpy() for k, t in tensors.items()}
    except TypeError:  # e.g. bfloat16
        return {}


def _shape(value) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def _to_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
