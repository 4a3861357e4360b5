"""Preallocated replay buffer on the device, terminations and truncations kept apart."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

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
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, terminations, truncations) -> None:
        """Append ``n`` transitions (leading dim n); arrays or tensors, copied onto the device."""
        obs = torch.as_tensor(obs, device=self.device)
        n = obs.shape[0]
        if obs.shape[1:] != self.obs_shape:
            raise DataError(
                f"ReplayBuffer.add: obs has shape {tuple(obs.shape[1:])}, buffer expects {self.obs_shape}."
            )
        idx = (
            (self.pos + torch.arange(n, device=self.device)) % self.capacity
            if self.pos + n > self.capacity
            else slice(self.pos, self.pos + n)
        )
        self.obs[idx] = obs.to(self.obs.dtype)
        self.next_obs[idx] = torch.as_tensor(next_obs, device=self.device, dtype=self.obs.dtype)
        self.actions[idx] = torch.as_tensor(actions, device=self.device, dtype=self.actions.dtype).reshape(
            n, *self.action_shape
        )
        self.rewards[idx] = torch.as_tensor(rewards, device=self.device, dtype=torch.float32)
        self.terminations[idx] = torch.as_tensor(terminations, device=self.device, dtype=torch.float32)
        self.truncations[idx] = torch.as_tensor(truncations, device=self.device, dtype=torch.float32)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        if self.size == 0:
            raise DataError("ReplayBuffer.sample called on an empty buffer.")
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=self.generator)
        return Batch(
            self.obs[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_obs[idx],
            self.terminations[idx],
            self.truncations[idx],
        )

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self._tensors().values())

    def _tensors(self) -> dict[str, torch.Tensor]:
        names = ("obs", "next_obs", "actions", "rewards", "terminations", "truncations")
        return {k: getattr(self, k) for k in names}

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
