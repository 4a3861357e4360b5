"""Environment construction: any Gymnasium id, vectorised, with episode statistics and optional
observation/reward normalisation whose running statistics travel with checkpoints.

Vector envs use Gymnasium's SAME_STEP autoreset: when a sub-env ends, ``step`` returns the first
observation of the next episode and puts the last one in ``info["final_obs"]``, so every step
yields a real transition. Normalisation wrappers sit inside each sub-env (as in CleanRL), since
Gymnasium's vector normalisers do not support SAME_STEP autoreset.
"""

from __future__ import annotations

import contextlib
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode

from gendm.core.errors import ConfigError, unknown_name
from gendm.envs.registration import register_environments


def check_env_id(env_id: str) -> None:
    """Raise UnknownNameError with the closest registered ids when ``env_id`` is not registered."""
    register_environments()
    if env_id not in gym.registry and env_id.startswith(("MiniGrid-", "BabyAI-")):
        with contextlib.suppress(ImportError):  # minigrid (optional) registers its ids on import
            import minigrid  # noqa: F401
    if env_id not in gym.registry:
        raise unknown_name(
            "environment", env_id, gym.registry.keys(), "List gendm's suites with `gendm list envs`."
        )


def _single_env_factory(
    env_id: str | EnvSpec, normalize_obs: bool, normalize_reward: bool, gamma: float, **kwargs: Any
):
    def make() -> gym.Env:
        # Innermost, so episode statistics are raw returns even when rewards are normalised.
        env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id, **kwargs))
        if normalize_obs:
            env = gym.wrappers.NormalizeObservation(env)
        if normalize_reward:
            env = gym.wrappers.NormalizeReward(env, gamma=gamma)
        return env

    return make


def make_env(
    env_id: str | EnvSpec,
    num_envs: int = 1,
    seed: int | None = None,
    *,
    normalize_obs: bool = False,
    normalize_reward: bool = False,
    gamma: float = 0.99,
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    """Build a synchronous vector env of ``num_envs`` copies of ``env_id`` with episode statistics
    (raw returns in ``info["final_info"]["episode"]`` when an episode ends).

    ``seed`` seeds the first reset (sub-env i gets seed + i) and the action space. Extra keyword
    arguments go to ``gymnasium.make``. Unknown ids raise an error suggesting close registered ids.
    An ``EnvSpec`` (e.g. one recorded in a Minari dataset) is made as recorded: its time limit, kwargs
    and additional wrappers.
    """
    check_env_id(env_id.id if isinstance(env_id, EnvSpec) else env_id)
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}.")
    factory = _single_env_factory(env_id, normalize_obs, normalize_reward, gamma, **kwargs)
    env = gym.vector.SyncVectorEnv([factory for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
        env.single_action_space.seed(seed)
    return env


def _find(env: gym.Env, cls: type) -> Any | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, cls):
            return env
        env = env.env
    return None


def _sub_envs(env: gym.vector.VectorEnv) -> list[gym.Env]:
    return list(env.unwrapped.envs)  # type: ignore[attr-defined]


# (checkpoint key prefix, wrapper class, attribute holding its RunningMeanStd)
_NORMALISERS = (
    ("obs", gym.wrappers.NormalizeObservation, "obs_rms"),
    ("ret", gym.wrappers.NormalizeReward, "return_rms"),
)


def normalization_state(env: gym.vector.VectorEnv) -> dict[str, np.ndarray]:
    """Running statistics of every normalisation wrapper (per sub-env), for checkpoints."""
    state: dict[str, np.ndarray] = {}
    for i, sub in enumerate(_sub_envs(env)):
        for prefix, cls, attr in _NORMALISERS:
            if (w := _find(sub, cls)) is not None:
                rms = getattr(w, attr)
                state |= {
                    f"{prefix}/{i}/mean": rms.mean,
                    f"{prefix}/{i}/var": rms.var,
                    f"{prefix}/{i}/count": np.array(rms.count),
                }
    return state


def load_normalization_state(env: gym.vector.VectorEnv, state: dict[str, Any], freeze: bool = False) -> None:
    """Restore statistics saved by ``normalization_state``; sub-envs beyond those saved reuse env 0's.

    ``freeze=True`` stops further updates (for evaluation envs).
    """
    for i, sub in enumerate(_sub_envs(env)):
        for prefix, cls, attr in _NORMALISERS:
            w = _find(sub, cls)
            j = i if f"{prefix}/{i}/mean" in state else 0
            if w is None or f"{prefix}/{j}/mean" not in state:
                continue
            rms = getattr(w, attr)
            rms.mean = np.asarray(state[f"{prefix}/{j}/mean"], dtype=np.float64).copy()
            rms.var = np.asarray(state[f"{prefix}/{j}/var"], dtype=np.float64).copy()
            rms.count = float(np.asarray(state[f"{prefix}/{j}/count"]))
            if freeze:
                w.update_running_mean = False
