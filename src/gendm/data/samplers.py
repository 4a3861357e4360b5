"""Minibatch samplers over an ``OfflineDataset`` that keep every tensor on the device.

- ``TransitionSampler``: uniform transitions as a ``gendm.data.replay.Batch`` (IQL, TD3+BC, SynthER).
- ``SequenceSampler``: action chunks for Diffusion Policy. A sample is any step ``t`` of the dataset;
  it returns the ``obs_horizon`` observations ending at ``t`` and ``pred_horizon`` actions starting at
  ``t - obs_horizon + 1`` (LeRobot's ``observation_delta_indices`` / ``action_delta_indices``).
  Indices that fall outside ``t``'s episode repeat the episode's first or last element, as LeRobot and
  Diffusion Policy pad, and ``is_pad`` marks them.
- ``TrajectorySampler``: windows of ``horizon`` consecutive steps inside one episode (Diffuser); with
  ``pad_tail`` a window may run past its episode's end, repeating the last step (``is_pad`` marks it).

Indices are drawn with ``torch.randint`` on the device from the sampler's own generator, and windows
are gathered with one indexing op, so sampling never leaves the device. Padded steps carry zero reward
and no termination.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from gendm.core.errors import ConfigError, DataError
from gendm.data.dataset import OfflineDataset
from gendm.data.replay import Batch


class SequenceBatch(NamedTuple):
    obs: torch.Tensor
    """(B, To, *obs_shape) for action chunks; (B, H, *obs_shape) for trajectories."""
    actions: torch.Tensor
    """(B, Tp, *action_shape) for action chunks; (B, H, *action_shape) for trajectories."""
    rewards: torch.Tensor
    """(B, Tp) or (B, H): the reward of each action's transition, 0 where padded."""
    terminations: torch.Tensor
    """(B, Tp) or (B, H): 1.0 where that transition ended in a terminal state, 0 where padded."""
    is_pad: torch.Tensor
    """(B, Tp) or (B, H) bool: the step lies outside the episode and repeats its edge."""


def window_indices(
    rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows[:, None] + offsets`` clamped into each row's episode ``[start, end - 1]``, and the mask of
    clamped (padded) entries; shapes (B, W)."""
    raw = rows[:, None] + offsets[None, :]
    idx = torch.minimum(torch.maximum(raw, starts[:, None]), ends[:, None] - 1)
    return idx, idx != raw


def action_chunk_indices(
    episode_ends: np.ndarray, obs_horizon: int, pred_horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every row t: observation indices (N, To), action indices (N, Tp) and the action padding mask
    (N, Tp) that ``SequenceSampler`` uses (a reference for tests and for iterating a dataset in order)."""
    _check_horizons(obs_horizon, pred_horizon)
    ends = torch.as_tensor(np.asarray(episode_ends, dtype=np.int64))
    lengths = torch.diff(ends, prepend=ends.new_zeros(1))
    rows = torch.arange(int(ends[-1]))
    ep_end = torch.repeat_interleave(ends, lengths)
    ep_start = ep_end - torch.repeat_interleave(lengths, lengths)
    obs_idx, _ = window_indices(rows, ep_start, ep_end, torch.arange(1 - obs_horizon, 1))
    act_idx, pad = window_indices(rows, ep_start, ep_end, torch.arange(pred_horizon) + 1 - obs_horizon)
    return obs_idx.numpy(), act_idx.numpy(), pad.numpy()


def trajectory_starts(episode_ends: np.ndarray, horizon: int, pad_tail: bool = False) -> np.ndarray:
    """Start rows of all ``horizon``-step windows inside one episode; with ``pad_tail`` every row of an
    episode may start a window (its tail is padded), otherwise only windows that fit."""
    if horizon < 1:
        raise ConfigError(f"horizon must be >= 1, got {horizon}.")
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    last = ends if pad_tail else ends - horizon + 1  # exclusive bound on a window's start
    out = np.concatenate([np.arange(s, e) for s, e in zip(starts, last) if e > s] or [np.zeros(0, np.int64)])
    if len(out) == 0:
        raise DataError(
            f"No episode is at least {horizon} steps long (longest: {int(np.diff(ends, prepend=0).max())}): "
            "use a shorter horizon or pad_tail=True."
        )
    return out.astype(np.int64)


def _check_horizons(obs_horizon: int, pred_horizon: int) -> None:
    if obs_horizon < 1:
        raise ConfigError(f"obs_horizon must be >= 1, got {obs_horizon}.")
    if pred_horizon < 1:
        raise ConfigError(f"pred_horizon must be >= 1, got {pred_horizon}.")


class _OnDevice:
    """The dataset's arrays as tensors on ``device`` (shared with numpy on the CPU), plus a generator."""

    def __init__(
        self, ds: OfflineDataset, device: str | torch.device = "cpu", seed: int | None = None
    ) -> None:
        if len(ds) == 0:
            raise DataError("Cannot sample from an empty dataset.")
        self.device = torch.device(device)

        def t(x: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x), device=self.device, dtype=dtype)

        discrete = np.issubdtype(ds.actions.dtype, np.integer)
        self.obs = t(ds.observations, torch.float32)
        self.next_obs = t(ds.next_observations, torch.float32)
        self.actions = t(ds.actions, torch.long if discrete else torch.float32)
        self.rewards = t(ds.rewards, torch.float32)
        self.terminations = t(ds.terminations, torch.float32)
        self.truncations = t(ds.truncations, torch.float32)
        self.ends = t(ds.episode_ends, torch.long)
        self.starts = t(ds.episode_starts, torch.long)
        self.size = len(ds)
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(seed)

    def randint(self, high: int, batch_size: int) -> torch.Tensor:
        return torch.randint(0, high, (batch_size,), device=self.device, generator=self.generator)

    def sequence(self, obs_idx: torch.Tensor, act_idx: torch.Tensor, pad: torch.Tensor) -> SequenceBatch:
        keep = (~pad).float()
        return SequenceBatch(
            self.obs[obs_idx],
            self.actions[act_idx],
            self.rewards[act_idx] * keep,
            self.terminations[act_idx] * keep,
            pad,
        )


class TransitionSampler(_OnDevice):
    """Uniform transitions: ``sample(batch_size) -> Batch``."""

    def sample(self, batch_size: int) -> Batch:
        i = self.randint(self.size, batch_size)
        return Batch(
            self.obs[i],
            self.actions[i],
            self.rewards[i],
            self.next_obs[i],
            self.terminations[i],
            self.truncations[i],
        )


class SequenceSampler(_OnDevice):
    """Action chunks: ``obs_horizon`` observations up to step t, ``pred_horizon`` actions from
    t - obs_horizon + 1 (see the module docstring for the padding)."""

    def __init__(
        self,
        ds: OfflineDataset,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        obs_horizon: int = 2,
        pred_horizon: int = 16,
    ) -> None:
        _check_horizons(obs_horizon, pred_horizon)
        super().__init__(ds, device, seed)
        self.episode_of = torch.as_tensor(ds.episode_ids(), device=self.device)
        self.obs_offsets = torch.arange(1 - obs_horizon, 1, device=self.device)
        self.act_offsets = torch.arange(pred_horizon, device=self.device) + 1 - obs_horizon

    def sample(self, batch_size: int) -> SequenceBatch:
        rows = self.randint(self.size, batch_size)
        ep = self.episode_of[rows]
        start, end = self.starts[ep], self.ends[ep]
        obs_idx, _ = window_indices(rows, start, end, self.obs_offsets)
        act_idx, pad = window_indices(rows, start, end, self.act_offsets)
        return self.sequence(obs_idx, act_idx, pad)


class TrajectorySampler(_OnDevice):
    """``horizon``-step windows of observations and actions inside one episode (Diffuser)."""

    def __init__(
        self,
        ds: OfflineDataset,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        horizon: int = 32,
        pad_tail: bool = False,
    ) -> None:
        super().__init__(ds, device, seed)
        window_starts = trajectory_starts(ds.episode_ends, horizon, pad_tail)
        episode = np.searchsorted(ds.episode_ends, window_starts, side="right")
        self.window_starts = torch.as_tensor(window_starts, device=self.device)
        self.window_ends = torch.as_tensor(ds.episode_ends[episode], device=self.device)
        self.offsets = torch.arange(horizon, device=self.device)

    def __len__(self) -> int:
        return len(self.window_starts)

    def sample(self, batch_size: int) -> SequenceBatch:
        k = self.randint(len(self.window_starts), batch_size)
        start = self.window_starts[k]
        idx, pad = window_indices(start, start, self.window_ends[k], self.offsets)
        return self.sequence(idx, idx, pad)


__all__ = [
    "SequenceBatch",
    "SequenceSampler",
    "TrajectorySampler",
    "TransitionSampler",
    "action_chunk_indices",
    "trajectory_starts",
    "window_indices",
]
