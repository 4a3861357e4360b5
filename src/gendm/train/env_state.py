"""Exact snapshots of an online run's training env, so that a resumed run continues bit for bit.

``capture(env)`` records, for every sub-env of a synchronous vector env: the base env's random
generator (its bit generator's state, JSON integers), the simulator state (classic control:
``unwrapped.state`` and its step counters; MuJoCo: ``mj_getState`` of the full integration state plus
the body positions ``xpos`` / ``xipos`` that some envs read before stepping), the ``TimeLimit``
counter, the episode statistics in progress and ``NormalizeReward``'s running return; and the random
generators of the vector env's action spaces. ``restore(env, state)`` puts them back. Envs of other
kinds, or with wrappers whose state is not known here, give None: the run then resumes by reseeding
(``env.reset(seed=seed + env_steps)``), as before, and says so once.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

# wrappers that hold no state a resumed run needs (NormalizeObservation's statistics are checkpointed
# by gendm.envs.normalization_state)
_STATELESS = (
    gym.wrappers.OrderEnforcing,
    gym.wrappers.PassiveEnvChecker,
    gym.wrappers.NormalizeObservation,
)
_CLASSIC_FIELDS = ("state", "steps_beyond_terminated", "last_u")
SUPPORTED = "gymnasium's classic-control and MuJoCo envs"


def capture(env: gym.vector.VectorEnv) -> dict[str, Any] | None:
    """The exact state of ``env``'s sub-envs and action spaces, or None where it cannot be taken."""
    vec = env.unwrapped
    subs = [_capture_sub(sub) for sub in getattr(vec, "envs", [None])]
    if any(s is None for s in subs):
        return None
    return {
        "subs": subs,
        "action_space": _rng_state(vec.action_space.np_random),
        "single_action_space": _rng_state(vec.single_action_space.np_random),
    }


def restore(env: gym.vector.VectorEnv, state: dict[str, Any]) -> None:
    """Put back what :func:`capture` took (the env must be built the same way)."""
    vec = env.unwrapped
    for sub, saved in zip(vec.envs, state["subs"], strict=True):
        _restore_sub(sub, saved)
    vec.action_space.np_random.bit_generator.state = state["action_space"]
    vec.single_action_space.np_random.bit_generator.state = state["single_action_space"]


def _rng_state(generator: np.random.Generator) -> dict[str, Any]:
    return generator.bit_generator.state


def _wrappers(sub: gym.Env) -> list[gym.Wrapper]:
    out = []
    while isinstance(sub, gym.Wrapper):
        out.append(sub)
        sub = sub.env
    return out


def _capture_sub(sub: gym.Env | None) -> dict[str, Any] | None:
    if sub is None:
        return None
    base = sub.unwrapped
    simulator = _capture_simulator(base)
    if simulator is None or getattr(base, "_np_random", None) is None:
        return None
    wrappers: list[Any] = []
    for w in _wrappers(sub):
        if isinstance(w, gym.wrappers.TimeLimit):
            wrappers.append({"elapsed_steps": w._elapsed_steps})
        elif isinstance(w, gym.wrappers.RecordEpisodeStatistics):
            wrappers.append(
                {"returns": w.episode_returns, "lengths": w.episode_lengths, "count": w.episode_count}
            )
        elif isinstance(w, gym.wrappers.NormalizeReward):
            wrappers.append({"discounted_reward": np.array(w.discounted_reward, dtype=np.float64)})
        elif isinstance(w, _STATELESS):
            wrappers.append({})
        else:
            return None
    return {"np_random": _rng_state(base._np_random), "simulator": simulator, "wrappers": wrappers}


def _restore_sub(sub: gym.Env, saved: dict[str, Any]) -> None:
    base = sub.unwrapped
    base._np_random.bit_generator.state = saved["np_random"]
    _restore_simulator(base, saved["simulator"])
    for w, s in zip(_wrappers(sub), saved["wrappers"], strict=True):
        if isinstance(w, gym.wrappers.TimeLimit):
            w._elapsed_steps = int(s["elapsed_steps"])
        elif isinstance(w, gym.wrappers.RecordEpisodeStatistics):
            w.episode_returns, w.episode_lengths = float(s["returns"]), int(s["lengths"])
            w.episode_count = int(s["count"])
        elif isinstance(w, gym.wrappers.NormalizeReward):
            w.discounted_reward = np.asarray(s["discounted_reward"], dtype=np.float64)


def _capture_simulator(base: gym.Env) -> dict[str, Any] | None:
    module = type(base).__module__
    if module.startswith("gymnasium.envs.classic_control"):
        out: dict[str, Any] = {}
        for name in _CLASSIC_FIELDS:
            if hasattr(base, name):
                value = getattr(base, name)
                if isinstance(value, np.ndarray | np.generic | tuple):  # its dtype kept: the same math
                    kind = "tuple" if isinstance(value, tuple) else "array" if np.ndim(value) else "scalar"
                    out[name] = {"array": np.array(value), "as": kind}
                elif value is None or isinstance(value, int | float | bool):
                    out[name] = {"value": value}
                else:
                    return None
        return {"kind": "classic_control", **out}
    if module.startswith("gymnasium.envs.mujoco") and hasattr(base, "data"):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(base.model, spec), dtype=np.float64)
        mujoco.mj_getState(base.model, base.data, state, spec)
        data = base.data
        return {"kind": "mujoco", "state": state, "xpos": data.xpos.copy(), "xipos": data.xipos.copy()}
    return None


def _restore_simulator(base: gym.Env, saved: dict[str, Any]) -> None:
    if saved["kind"] == "classic_control":
        for name in _CLASSIC_FIELDS:
            if name not in saved:
                continue
            entry = saved[name]
            if "array" in entry:
                array = np.array(entry["array"])
                kind = entry["as"]
                value = tuple(array.tolist()) if kind == "tuple" else array[()] if kind == "scalar" else array
                setattr(base, name, value)
            else:
                setattr(base, name, entry["value"])
        return
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.asarray(saved["state"], dtype=np.float64)
    mujoco.mj_setState(base.model, base.data, state, spec)
    mujoco.mj_forward(base.model, base.data)  # derived quantities, for anything read before a step
    mujoco.mj_setState(base.model, base.data, state, spec)  # as saved, warm start included
    base.data.xpos[:] = np.asarray(saved["xpos"])  # as the last step left them (from its last substep)
    base.data.xipos[:] = np.asarray(saved["xipos"])


__all__ = ["SUPPORTED", "capture", "restore"]
