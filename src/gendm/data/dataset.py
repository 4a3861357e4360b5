"""Offline datasets in memory: flat transitions in episode order.

``OfflineDataset`` is the in-memory contract every offline method reads: numpy arrays, one row per
transition, episodes back to back (``episode_ends`` are exclusive end indices), terminations and
truncations kept apart, and the metadata (environment id, provenance, reference min/max scores).
Checks live in :mod:`gendm.data.validation`, Minari's on-disk layout in :mod:`gendm.data.minari_io`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from gendm.core.errors import DataError

FLOAT_FIELDS = ("observations", "next_observations", "actions", "rewards")  # fields checked for NaN/Inf


@dataclass
class OfflineDataset:
    observations: np.ndarray
    """(N, *obs_shape) — the observation each transition starts from: float32 for float Box spaces;
    integer spaces keep integers (int64 of shape (N,) for Discrete, the space's dtype for an integer
    Box such as uint8 images)."""
    actions: np.ndarray
    """(N, *action_shape) — float32 for Box actions, int64 for Discrete."""
    rewards: np.ndarray
    """(N,) float32."""
    next_observations: np.ndarray
    """(N, *obs_shape), dtype of ``observations`` — the observation after the action (the final one at
    an episode end)."""
    terminations: np.ndarray
    """(N,) bool — the episode ended in a terminal state (no bootstrap)."""
    truncations: np.ndarray
    """(N,) bool — the episode was cut (time limit); bootstrap from next_observations."""
    episode_ends: np.ndarray
    """(E,) int64 — exclusive end index of each episode; episode i is rows [ends[i-1], ends[i])."""
    env_id: str
    """The Gymnasium id the data was collected on."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Dataset id, provenance (policy, noise, seed, gendm version), ref_min_score, ref_max_score, ..."""

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_ends, prepend=0).astype(np.int64)

    def episode_ids(self) -> np.ndarray:
        """(N,) int64: the episode each row belongs to."""
        return np.repeat(np.arange(self.num_episodes), self.episode_lengths)

    def episode_returns(self) -> np.ndarray:
        """(E,) float64 undiscounted return of each episode."""
        if len(self) == 0:
            return np.zeros(0)
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)

    @property
    def observation_space(self) -> gym.Space:
        """The stored observation space (metadata), else the registered environment's."""
        return self.spaces()[0]

    @property
    def action_space(self) -> gym.Space:
        """The stored action space (metadata), else the registered environment's."""
        return self.spaces()[1]

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """(observation_space, action_space): from the metadata (a loaded dataset), else from the
        registered environment ``env_id``."""
        from minari.serialization import deserialize_space

        stored = [self.metadata.get(k) for k in ("observation_space", "action_space")]
        if all(isinstance(v, str) for v in stored):
            return deserialize_space(stored[0]), deserialize_space(stored[1])
        from gendm.envs import check_env_id

        check_env_id(self.env_id)
        env = gym.make(self.env_id)
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()

    def finite_episodes(self) -> np.ndarray:
        """(K,) int64 indices of the episodes whose float fields hold no NaN/Inf (for ``select_episodes``)."""
        bad = np.zeros(len(self), bool)
        for name in FLOAT_FIELDS:
            x = getattr(self, name)
            if np.issubdtype(x.dtype, np.floating):
                bad |= ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        bad_episodes = np.unique(self.episode_ids()[bad])
        return np.setdiff1d(np.arange(self.num_episodes), bad_episodes).astype(np.int64)

    def select_episodes(self, indices: Sequence[int] | np.ndarray) -> OfflineDataset:
        """A new dataset holding episodes ``indices`` (in that order); metadata is copied."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, ends = self.episode_starts[indices], self.episode_ends[indices]
        rows = (
            np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
            if len(indices)
            else np.zeros(0, np.int64)
        )
        return OfflineDataset(
            self.observations[rows],
            self.actions[rows],
            self.rewards[rows],
            self.next_observations[rows],
            self.terminations[rows],
            self.truncations[rows],
            np.cumsum(ends - starts).astype(np.int64),
            self.env_id,
            dict(self.metadata),
        )

    @staticmethod
    def concatenate(
        datasets: Sequence[OfflineDataset], metadata: dict[str, Any] | None = None
    ) -> OfflineDataset:
        """Episodes of ``datasets`` back to back (e.g. medium-expert = medium + expert)."""
        if not datasets:
            raise DataError("OfflineDataset.concatenate needs at least one dataset.")
        env_ids = sorted({d.env_id for d in datasets})
        if len(env_ids) > 1:
            raise DataError(f"Cannot concatenate datasets of different environments: {', '.join(env_ids)}.")
        offsets = np.cumsum([0] + [len(d) for d in datasets[:-1]])
        cat = np.concatenate
        return OfflineDataset(
            cat([d.observations for d in datasets]),
            cat([d.actions for d in datasets]),
            cat([d.rewards for d in datasets]),
            cat([d.next_observations for d in datasets]),
            cat([d.terminations for d in datasets]),
            cat([d.truncations for d in datasets]),
            cat([d.episode_ends + o for d, o in zip(datasets, offsets)]).astype(np.int64),
            env_ids[0],
            dict(metadata if metadata is not None else datasets[0].metadata),
        )

    def stats(self) -> dict[str, Any]:
        """Size, episode return and length statistics, and per-dimension observation/action statistics
        (float64 numpy arrays under ``observations`` and ``actions``)."""
        returns, lengths = self.episode_returns(), self.episode_lengths

        def summary(x: np.ndarray) -> dict[str, float]:
            return {
                "mean": float(x.mean()),
                "std": float(x.std()),
                "min": float(x.min()),
                "max": float(x.max()),
            }

        def per_dim(x: np.ndarray) -> dict[str, np.ndarray]:
            x = x.reshape(len(x), -1)
            return {
                "mean": x.mean(0, dtype=np.float64),
                "std": x.std(0, dtype=np.float64),
                "min": x.min(0).astype(np.float64),
                "max": x.max(0).astype(np.float64),
            }

        return {
            "transitions": len(self),
            "episodes": self.num_episodes,
            "terminations": int(self.terminations.sum()),
            "truncations": int(self.truncations.sum()),
            "return": summary(returns),
            "length": summary(lengths),
            "observations": per_dim(self.observations),
            "actions": per_dim(self.actions),
        }


__all__ = ["FLOAT_FIELDS", "OfflineDataset"]
