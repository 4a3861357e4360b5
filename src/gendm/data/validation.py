"""Checks of an ``OfflineDataset``: lengths, episode ends, dtypes and shapes against the spaces,
NaN/Inf and end flags. Each error names the field, episode and row, and what to do."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from gendm.core.errors import DataError
from gendm.data.dataset import FLOAT_FIELDS, OfflineDataset


def _where(ds: OfflineDataset, row: int) -> str:
    ends = np.asarray(ds.episode_ends)
    ep = int(np.searchsorted(ends, row, side="right"))
    start = int(ends[ep - 1]) if ep > 0 else 0
    return f"row {row} (episode {ep}, step {row - start})"


def validate(
    ds: OfflineDataset,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
    *,
    load_call: str | None = None,
) -> None:
    """Raise DataError naming the field, episode and row of the first problem found: inconsistent
    lengths, bad ``episode_ends``, empty episodes, dtypes or shapes that do not fit the spaces,
    NaN/Inf, or episode end flags (terminations/truncations) in the wrong place. ``load_call`` is the
    Python expression that loads ``ds`` without validation, quoted in the NaN/Inf hint."""
    n = len(ds.rewards)
    if n == 0:
        raise DataError("The dataset has no transitions: collect some first (gendm data collect).")
    fields = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")
    for name in fields:
        if len(getattr(ds, name)) != n:
            raise DataError(
                f"Field {name!r} has {len(getattr(ds, name))} rows but rewards has {n}: every "
                "per-transition field needs exactly one row per transition."
            )
    for name in ("rewards", "terminations", "truncations"):
        if getattr(ds, name).ndim != 1:
            raise DataError(f"Field {name!r} must be 1-D (N,), got shape {getattr(ds, name).shape}.")
    _check_episode_ends(ds.episode_ends, n)
    if ds.observations.shape != ds.next_observations.shape:
        raise DataError(
            f"observations have shape {ds.observations.shape} but next_observations "
            f"{ds.next_observations.shape}: both need one row per transition of the same shape."
        )
    for name in ("terminations", "truncations"):
        if getattr(ds, name).dtype != np.bool_:
            raise DataError(
                f"Field {name!r} has dtype {getattr(ds, name).dtype}, expected bool: convert it with "
                ".astype(bool)."
            )
    if not np.issubdtype(ds.rewards.dtype, np.floating):
        raise DataError(f"Field 'rewards' has dtype {ds.rewards.dtype}, expected a float dtype (float32).")
    if observation_space is not None:
        _check_space(ds.observations, observation_space, "observations")
        _check_space(ds.next_observations, observation_space, "next_observations")
    if action_space is not None:
        _check_space(ds.actions, action_space, "actions")
    for name in FLOAT_FIELDS:
        x = getattr(ds, name)
        if np.issubdtype(x.dtype, np.floating):
            bad = ~np.isfinite(x.reshape(n, -1)).all(axis=1)
            if bad.any():
                row = int(np.argmax(bad))
                kind = "NaN" if np.isnan(x[row]).any() else "Inf"
                keep = "ds = ds.select_episodes(ds.finite_episodes())"
                how = f"keep the finite episodes: `{keep}`"
                if load_call:
                    how = f"load without validation and keep the finite episodes: `ds = {load_call}; {keep}`"
                raise DataError(
                    f"Field {name!r} holds {kind} at {_where(ds, row)} ({int(bad.sum())} bad rows in all): "
                    f"fix the data, or {how}."
                )
    _check_end_flags(ds)


def _check_episode_ends(ends: np.ndarray, n: int) -> None:
    ends = np.asarray(ends)
    if ends.ndim != 1 or len(ends) == 0 or not np.issubdtype(ends.dtype, np.integer):
        raise DataError(f"episode_ends must be a non-empty 1-D int64 array, got {ends.dtype} {ends.shape}.")
    lengths = np.diff(ends, prepend=0)
    if (lengths <= 0).any():
        ep = int(np.argmax(lengths <= 0))
        raise DataError(
            f"Episode {ep} is empty or reversed (episode_ends[{ep}] = {int(ends[ep])}, previous end "
            f"{int(ends[ep - 1]) if ep else 0}): episode_ends must strictly increase; drop empty episodes."
        )
    if ends[-1] != n:
        raise DataError(
            f"episode_ends[-1] = {int(ends[-1])} but the dataset has {n} transitions: the last episode must "
            "end at the last row."
        )


def _check_space(x: np.ndarray, space: gym.Space, name: str) -> None:
    if isinstance(space, gym.spaces.Discrete):
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
            raise DataError(
                f"Field {name!r} has dtype {x.dtype} and shape {x.shape[1:]} per row, but the space {space} "
                "needs one integer per row: store indices as int64 of shape (N,)."
            )
        lo, hi = int(space.start), int(space.start + space.n)
        bad = (x < lo) | (x >= hi)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"Field {name!r} holds {x[row]} at row {row}, outside {space} ([{lo}, {hi})).")
    elif isinstance(space, gym.spaces.Box):
        if tuple(x.shape[1:]) != tuple(space.shape):
            raise DataError(
                f"Field {name!r} has per-row shape {tuple(x.shape[1:])}, but the space {space} has shape "
                f"{space.shape}: the data was collected on a different environment or version."
            )
        if np.issubdtype(space.dtype, np.floating) != np.issubdtype(x.dtype, np.floating):
            raise DataError(
                f"Field {name!r} has dtype {x.dtype}, but the space {space} holds {space.dtype}: convert "
                f"with .astype(np.{'float32' if np.issubdtype(space.dtype, np.floating) else space.dtype})."
            )
    else:
        raise DataError(
            f"gendm datasets support Box and Discrete spaces; {name} use {type(space).__name__}. "
            "Flatten the space (gymnasium.wrappers.FlattenObservation) before collecting."
        )


def _check_end_flags(ds: OfflineDataset) -> None:
    ended = ds.terminations | ds.truncations
    last = ds.episode_ends - 1
    interior = ended.copy()
    interior[last] = False
    if interior.any():
        row = int(np.argmax(interior))
        flag = "terminations" if ds.terminations[row] else "truncations"
        raise DataError(
            f"Field {flag!r} is set at {_where(ds, row)}, which is not its episode's last step: split the "
            "episode there (episode_ends) or clear the flag."
        )
    open_ends = ~ended[last]
    if open_ends.any():
        ep = int(np.argmax(open_ends))
        raise DataError(
            f"Episode {ep} (rows {int(ds.episode_starts[ep])}..{int(last[ep])}) ends with neither a "
            "termination nor a truncation: mark its last step truncated (time limit or cut) or terminated."
        )


def check_contiguous(ds: OfflineDataset) -> None:
    """Minari stores T+1 observations per episode, so within an episode next_obs[t] must be obs[t+1]."""
    n = len(ds)
    differs = ~(ds.next_observations[:-1] == ds.observations[1:]).reshape(n - 1, -1).all(axis=1)
    differs[ds.episode_ends[:-1] - 1] = False  # across an episode boundary they may differ
    if differs.any():
        row = int(np.argmax(differs))
        raise DataError(
            f"next_observations at {_where(ds, row)} differs from the next row's observation: Minari's "
            "format stores episodes as contiguous observation sequences. Split the episode there "
            "(episode_ends) or fix the transition order."
        )


__all__ = ["check_contiguous", "validate"]
