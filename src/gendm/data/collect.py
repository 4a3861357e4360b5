"""Collect offline datasets: roll out a policy (uniform random, a scripted expert, or any callable, such
as a gendm training checkpoint's) and turn the transitions into an ``OfflineDataset``; also turn the
replay buffer saved in an online-training checkpoint into one (D4RL's *medium-replay*).

Policies see raw observations, shape ``(1, *obs_shape)``, and return env actions: ``random``,
``expert`` or any callable, such as the deterministic policy of a training checkpoint that
``gendm.agents.loading.checkpoint_policy`` rebuilds (agents sit above data, so data never builds
one). A policy's optional ``reset_episodes(mask)`` is called at each episode end. ``noise`` adds
Gaussian noise of that std to the action scaled to [-1, 1] (Box actions), ``epsilon`` replaces the
action by a uniformly random one with that probability. Collection by ``steps`` marks the last,
unfinished episode truncated; collection by ``episodes`` stops when the last one ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

import gendm
from gendm.core.errors import CheckpointError, ConfigError, DataError
from gendm.data.dataset import OfflineDataset
from gendm.data.normalize import ActionScaler

Policy = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------- policies
def make_policy(
    policy: str | Policy,
    env: gym.vector.VectorEnv,
    env_id: str,
    seed: int = 0,
    policy_info: dict[str, Any] | None = None,
) -> tuple[Policy, dict[str, Any]]:
    """``random``, ``expert`` or a policy callable -> (policy, provenance)."""
    if callable(policy):
        return policy, dict(policy_info) if policy_info else {"policy": "callable"}
    if policy == "random":
        return (lambda obs: env.action_space.sample()), {"policy": "random"}
    if policy == "expert":
        from gendm.envs.experts import expert_policy

        expert, rng = expert_policy(env_id), np.random.default_rng(seed)
        return (lambda obs: expert(obs, rng)), {"policy": "expert", "expert": env_id}
    if Path(policy).is_dir():
        raise ConfigError(
            f"collect() takes 'random', 'expert' or a policy callable, not the directory {policy!r}: "
            "rebuild the checkpoint's policy first, policy, info = gendm.agents.loading.checkpoint_policy("
            f"{policy!r}, env_id={env_id!r}), then collect({env_id!r}, policy, policy_info=info, ...)."
        )
    raise ConfigError(
        f"--policy {policy!r} is neither 'random', 'expert' nor an existing checkpoint directory (the --out "
        "directory of `gendm train`, or its checkpoint subdirectory)."
    )


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint inside a `gendm train` output directory, or ``path`` itself if it is one."""
    from gendm.core.checkpoint import find_checkpoint_dir

    path = Path(path)
    found = find_checkpoint_dir(path / "checkpoint") or find_checkpoint_dir(path)
    if found is None:
        raise CheckpointError(
            f"No gendm checkpoint in {path}: expected {path}/checkpoint/meta.json or {path}/meta.json "
            "(the --out directory of `gendm train`, or its checkpoint subdirectory)."
        )
    return found


def make_perturbation(
    space: gym.Space,
    noise: float,
    epsilon: float,
    rng: np.random.Generator,
    random_actions: Callable[[], np.ndarray],
) -> Callable[[np.ndarray], np.ndarray]:
    """``actions -> actions``: Gaussian noise of std ``noise`` on the [-1, 1]-scaled action (clipped to
    the bounds), then, with probability ``epsilon`` per row, a random action from ``random_actions``."""
    if noise > 0 and not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"--noise needs a Box action space, not {space}. Use --epsilon instead.")
    scaler = ActionScaler.from_space(space) if noise > 0 else None

    def perturb(actions: np.ndarray) -> np.ndarray:
        if scaler is not None:
            scaled = scaler.scale(np.asarray(actions, np.float32))
            scaled = np.clip(scaled + noise * rng.standard_normal(scaled.shape), -1.0, 1.0)
            actions = scaler.unscale(scaled.astype(np.float32))
        if epsilon > 0:
            explore = rng.random(len(actions)) < epsilon
            if explore.any():
                actions = np.array(actions, copy=True)
                actions[explore] = np.asarray(random_actions())[explore]
        return actions

    return perturb


# ---------------------------------------------------------------------------------- collection
class _Recorder:
    """Growable per-field arrays, one row per step (preallocated when the step count is known)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.n = max(capacity, 1), 0
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, **rows: np.ndarray) -> None:
        if not self.arrays:
            self.arrays = {k: np.empty((self.capacity, *v.shape), v.dtype) for k, v in rows.items()}
        if self.n == self.capacity:
            self.arrays = {k: np.concatenate([v, np.empty_like(v)]) for k, v in self.arrays.items()}
            self.capacity *= 2
        for k, v in rows.items():
            self.arrays[k][self.n] = v
        self.n += 1

    def result(self) -> dict[str, np.ndarray]:
        return {k: v[: self.n] for k, v in self.arrays.items()}


def collect(
    env_id: str,
    policy: str | Policy = "random",
    *,
    episodes: int | None = None,
    steps: int | None = None,
    noise: float = 0.0,
    epsilon: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    command: str | None = None,
    policy_info: dict[str, Any] | None = None,
) -> OfflineDataset:
    """Roll out ``policy`` (``random``, ``expert`` or a callable ``obs -> actions``) on ``env_id`` for
    ``episodes`` complete episodes or ``steps`` transitions (exactly one of them). ``policy_info`` is a
    callable's provenance for the dataset's metadata (``checkpoint_policy`` returns it)."""
    from gendm.envs import make_env

    if (episodes is None) == (steps is None):
        raise ConfigError("Give exactly one of episodes (--episodes) or steps (--steps).")
    target = episodes if episodes is not None else steps
    if target is None or target < 1:
        raise ConfigError(f"--{'episodes' if episodes is not None else 'steps'} must be >= 1, got {target}.")
    if noise < 0 or not 0 <= epsilon <= 1:
        raise ConfigError(f"--noise must be >= 0 and --epsilon in [0, 1]; got {noise} and {epsilon}.")
    env = make_env(env_id, 1, seed=seed)
    try:
        obs_dtype = storage_dtype(env.single_observation_space, env_id, "observation")
        action_dtype = storage_dtype(env.single_action_space, env_id, "action")
    except DataError:
        env.close()
        raise
    rng = np.random.default_rng(seed + 1)
    perturb = make_perturbation(env.single_action_space, noise, epsilon, rng, env.action_space.sample)
    act, provenance = make_policy(policy, env, env_id, seed, policy_info)
    rec = _Recorder(steps or 1024)
    obs, _ = env.reset(seed=seed)
    done_episodes, t0 = 0, time.perf_counter()
    bar = tqdm(
        total=target, unit="step" if steps else "episode", disable=not progress, desc=f"collect {env_id}"
    )
    while (rec.n < steps) if steps is not None else (done_episodes < target):
        action = perturb(act(obs))
        next_obs, reward, term, trunc, info = env.step(action)
        final = info["final_obs"][0] if (term[0] or trunc[0]) else next_obs[0]
        rec.add(
            observations=np.asarray(obs[0], obs_dtype),
            actions=np.asarray(action[0], action_dtype),
            rewards=np.float32(reward[0]),
            next_observations=np.asarray(final, obs_dtype),
            terminations=np.bool_(term[0]),
            truncations=np.bool_(trunc[0]),
        )
        done_episodes += int(term[0] or trunc[0])
        bar.update(1 if steps else int(term[0] or trunc[0]))
        if (term[0] or trunc[0]) and hasattr(act, "reset_episodes"):
            act.reset_episodes(np.ones(1, dtype=bool))  # the next observation starts a new episode
        obs = next_obs
    bar.close()
    env.close()
    provenance |= {
        "noise": noise,
        "epsilon": epsilon,
        "seed": seed,
        "gendm_version": gendm.__version__,
        "command": command if command is not None else " ".join(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "collect_s": round(time.perf_counter() - t0, 3),
    }
    return steps_to_dataset(rec.result(), env_id, metadata=_metadata(env_id, provenance))


def storage_dtype(space: gym.Space, env_id: str, kind: str) -> np.dtype:
    """The dtype a dataset stores ``space``'s values in: float32 for a float Box, the space's own dtype
    for integer spaces (int64 for Discrete, e.g. uint8 images). Other spaces (Dict, Tuple, Text,
    MultiDiscrete...) raise a DataError before anything is collected."""
    if isinstance(space, gym.spaces.Box):
        return np.dtype(np.float32) if np.issubdtype(space.dtype, np.floating) else np.dtype(space.dtype)
    if isinstance(space, gym.spaces.Discrete):
        return np.dtype(np.int64)
    hint = (
        "for MiniGrid, minigrid.wrappers.ImgObsWrapper keeps the image; "
        if env_id.startswith(("MiniGrid-", "BabyAI-"))
        else ""
    )
    shown = str(space)
    if isinstance(space, gym.spaces.Dict):  # MiniGrid's mission space prints a function address
        shown = "Dict(" + ", ".join(f"{k}: {type(v).__name__}" for k, v in space.spaces.items()) + ")"
    raise DataError(
        f"{env_id} has a {type(space).__name__} {kind} space, {shown}; gendm datasets hold Box and Discrete "
        f"spaces only. Wrap the environment so that it emits one array ({hint}gymnasium.wrappers."
        "FlattenObservation flattens Dict/Tuple spaces of Box and Discrete), register the wrapped env "
        'under its own id, e.g. gymnasium.register("MyEnv-v0", entry_point=lambda **kw: '
        f'Wrapper(gymnasium.make("{env_id}", **kw))), and collect that id in Python with '
        'gendm.data.collect.collect("MyEnv-v0", ...).'
    )


def _metadata(env_id: str, provenance: dict[str, Any]) -> dict[str, Any]:
    name = provenance.get("algo", provenance["policy"])
    extra = f" + N(0, {provenance['noise']}) noise" if provenance.get("noise") else ""
    extra += f" + {provenance['epsilon']}-random" if provenance.get("epsilon") else ""
    return {
        "algorithm_name": f"gendm {name}",
        "description": f"{provenance['policy']} policy ({name}{extra}) on {env_id}, collected by gendm.",
        "provenance": provenance,
    }


def steps_to_dataset(
    steps: dict[str, np.ndarray],
    env_id: str,
    num_envs: int = 1,
    metadata: dict[str, Any] | None = None,
    drop_leading_fragment: bool = False,
) -> OfflineDataset:
    """Transitions in step-major order (row ``t * num_envs + e`` is env ``e`` at step ``t``, as in a vector
    env or a replay buffer) -> episodes back to back, env by env. Each env's last unfinished episode is
    marked truncated; ``drop_leading_fragment`` drops each env's first episode (whose start is missing
    in a ring buffer that wrapped)."""
    n = len(steps["rewards"])
    if n % num_envs:
        raise DataError(f"{n} transitions do not split evenly over {num_envs} environments.")
    parts = []
    for e in range(num_envs):
        part = {k: v[e::num_envs] for k, v in steps.items()}
        part["terminations"] = part["terminations"].astype(bool)
        part["truncations"] = part["truncations"].astype(bool)
        ended = part["terminations"] | part["truncations"]
        if drop_leading_fragment and ended.any():
            first = int(np.argmax(ended)) + 1
            part = {k: v[first:] for k, v in part.items()}
            ended = ended[first:]
        if len(ended) == 0:
            continue
        if not ended[-1]:
            part["truncations"] = part["truncations"].copy()
            part["truncations"][-1] = True
            ended = part["terminations"] | part["truncations"]
        part["episode_ends"] = np.flatnonzero(ended) + 1
        parts.append(part)
    if not parts:
        raise DataError("No transitions to turn into a dataset.")
    return OfflineDataset.concatenate(
        [
            OfflineDataset(
                observations=_float32(p["observations"]),
                actions=p["actions"],
                rewards=np.asarray(p["rewards"], np.float32),
                next_observations=_float32(p["next_observations"]),
                terminations=p["terminations"],
                truncations=p["truncations"],
                episode_ends=p["episode_ends"].astype(np.int64),
                env_id=env_id,
            )
            for p in parts
        ],
        metadata=metadata or {},
    )


def _float32(x: np.ndarray) -> np.ndarray:
    """Float arrays as float32 (gendm's float dtype); integer observations keep their dtype."""
    x = np.asarray(x)
    return x.astype(np.float32, copy=False) if np.issubdtype(x.dtype, np.floating) else x


def replay_buffer_dataset(path: str | Path) -> OfflineDataset:
    """The replay buffer saved in an online-training checkpoint as a dataset (D4RL's medium-replay):
    every transition the run stored, in order, episode boundaries kept."""
    from gendm.core.checkpoint import load_checkpoint

    ckpt = find_checkpoint(path)
    state, meta = load_checkpoint(ckpt)
    if "buffer" not in state:
        raise CheckpointError(
            f"Checkpoint {ckpt} ({meta.get('algo')}) holds no replay buffer (on-policy run)."
        )
    config = meta.get("config", {})
    if config.get("normalize_obs") or config.get("normalize_reward"):
        raise DataError(
            f"Checkpoint {ckpt} was trained with normalize_obs/normalize_reward: its buffer holds normalised "
            "values whose raw ones cannot be recovered. Train with both off to build medium-replay."
        )
    buf, num_envs = state["buffer"], int(config.get("num_envs", 1))
    size, pos, capacity = int(buf["size"]), int(buf["pos"]), int(buf["capacity"])
    written = int(state["loop"]["env_steps"])
    wrapped = written > capacity
    if wrapped and capacity % num_envs:
        raise DataError(
            f"Checkpoint {ckpt}: the buffer wrapped and its capacity {capacity} is not a multiple of "
            f"num_envs {num_envs}, so transitions cannot be assigned to environments."
        )
    order = np.roll(np.arange(size), -pos) if wrapped else np.arange(size)
    names = {
        "obs": "observations",
        "actions": "actions",
        "rewards": "rewards",
        "next_obs": "next_observations",
        "terminations": "terminations",
        "truncations": "truncations",
    }
    steps = {new: buf[old].cpu().numpy()[order] for old, new in names.items()}
    provenance = {
        "policy": "replay buffer",
        "checkpoint": str(ckpt.resolve()),
        "algo": meta.get("algo"),
        "checkpoint_env_steps": written,
        "seed": meta.get("seed"),
        "gendm_version": gendm.__version__,
        "command": " ".join(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    metadata = {
        "algorithm_name": f"gendm {meta.get('algo')} replay buffer",
        "description": f"Replay buffer of a gendm {meta.get('algo')} run on {meta['env_id']} after {written} "
        "env steps (every stored transition, in order).",
        "provenance": provenance,
    }
    return steps_to_dataset(steps, meta["env_id"], num_envs, metadata, drop_leading_fragment=wrapped)


__all__ = [
    "Policy",
    "collect",
    "find_checkpoint",
    "make_perturbation",
    "make_policy",
    "replay_buffer_dataset",
    "steps_to_dataset",
    "storage_dtype",
]
