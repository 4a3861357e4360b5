"""Named benchmark suites and per-task reference returns for normalised scores.

A normalised score maps a raw episode return onto ``0 = uniform random policy`` and
``1 = expert`` for one task, so results on tasks with different reward scales can be
aggregated (e.g. with interquartile means). Random returns are measured by gendm itself
(``python -m gendm.envs.references --episodes 100``); expert returns cite a public source, or, for
gendm's own tasks, are measured on the scripted expert of ``gendm.envs.experts``
(``python -m gendm.envs.references --suite imitation --episodes 1000 --expert``).
"""

from __future__ import annotations

import argparse
import difflib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from gendm.envs.registration import register_environments


@dataclass(frozen=True)
class TaskReference:
    """Reference returns for one Gymnasium task, with short citations for both numbers."""

    env_id: str
    random_return: float
    expert_return: float
    random_source: str
    expert_source: str


SUITES: dict[str, tuple[str, ...]] = {
    "classic": ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCarContinuous-v0"),
    "mujoco": ("InvertedPendulum-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5"),
    "imitation": ("gendm/TwoPathReach-v0",),
}

_RANDOM_SRC = "measured by gendm: python -m gendm.envs.references --episodes 100 (2026-11-22)"
_D4RL = (
    "D4RL REF_MAX_SCORE for {key}-*-v2 datasets = {value} (d4rl/infos.py, Farama-Foundation/D4RL); "
    "expert-policy return measured on mujoco-py {name}-v2 (gym {name}Env), not on -v5"
)
_MEASURED_EXPERT = (
    "measured by gendm on its scripted expert (gendm.envs.experts): python -m gendm.envs.references "
    "--suite imitation --episodes 1000 --expert (2026-11-22)"
)
_ZOO = (
    "RL Baselines3 Zoo benchmark.md, {algo} on {env}: mean_reward {value} "
    "(DLR-RM/rl-baselines3-zoo, commit 0088472b)"
)


def _ref(env_id: str, random_return: float, expert_return: float, expert_source: str) -> TaskReference:
    return TaskReference(env_id, random_return, expert_return, _RANDOM_SRC, expert_source)


REFERENCES: dict[str, TaskReference] = {
    r.env_id: r
    for r in (
        _ref("CartPole-v1", 21.61, 500.0, "maximum return: +1 per step, 500-step Gymnasium time limit"),
        _ref("Acrobot-v1", -499.85, -73.506, _ZOO.format(algo="PPO", env="Acrobot-v1", value=-73.506)),
        _ref("Pendulum-v1", -1233.66, -156.995, _ZOO.format(algo="SAC", env="Pendulum-v1", value=-156.995)),
        _ref(
            "MountainCarContinuous-v0",
            -33.25,
            94.679,
            _ZOO.format(algo="SAC", env="MountainCarContinuous-v0", value=94.679),
        ),
        _ref(
            "InvertedPendulum-v5", 5.35, 1000.0, "maximum return: +1 per step, 1000-step Gymnasium time limit"
        ),
        _ref("Hopper-v5", 18.43, 3234.3, _D4RL.format(key="hopper", value=3234.3, name="Hopper")),
        _ref(
            "HalfCheetah-v5",
            -286.54,
            12135.0,
            _D4RL.format(key="halfcheetah", value=12135.0, name="HalfCheetah"),
        ),
        _ref("Walker2d-v5", 1.76, 4592.3, _D4RL.format(key="walker2d", value=4592.3, name="Walker2d")),
        _ref("Ant-v5", -63.64, 3879.7, _D4RL.format(key="ant", value=3879.7, name="Ant")),
        # Sparse reward 1 on success, so returns are success rates.
        _ref("gendm/TwoPathReach-v0", 0.0, 1.0, _MEASURED_EXPERT),
    )
}


def suite_tasks(name: str) -> tuple[str, ...]:
    """Return the env ids of suite ``name``; unknown names raise ``KeyError`` with a suggestion."""
    try:
        return SUITES[name]
    except KeyError:
        close = difflib.get_close_matches(name, SUITES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        available = ", ".join(sorted(SUITES))
        raise KeyError(f"unknown suite {name!r}.{hint} Available suites: {available}") from None


def reference(env_id: str) -> TaskReference | None:
    """Return the reference returns for ``env_id``, or ``None`` when gendm has none."""
    return REFERENCES.get(env_id)


def normalised_score(env_id: str, ret: float) -> float | None:
    """Map ``ret`` to ``(ret - random) / (expert - random)``: 0 = random, 1 = expert; ``None`` if unknown."""
    ref = REFERENCES.get(env_id)
    if ref is None:
        return None
    return (float(ret) - ref.random_return) / (ref.expert_return - ref.random_return)


def measure_random_return(env_id: str, episodes: int = 100, seed: int = 0) -> tuple[float, float]:
    """Mean and (population) std of undiscounted returns of a uniform random policy.

    Uses plain ``gymnasium.make`` with default time limits; the env is reset with ``seed`` once
    (later resets continue its RNG) and the action space is seeded with ``seed``.
    """
    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    env = gym.make(env_id)
    try:
        env.action_space.seed(seed)
        returns = np.empty(episodes, dtype=np.float64)
        for ep in range(episodes):
            env.reset(seed=seed if ep == 0 else None)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total += float(reward)
                done = terminated or truncated
            returns[ep] = total
    finally:
        env.close()
    return float(returns.mean()), float(returns.std())


def measure_expert_return(env_id: str, episodes: int = 100, seed: int = 0) -> tuple[float, float]:
    """Mean and (population) std of undiscounted returns of the scripted expert of ``env_id``
    (``gendm.envs.experts``); the env is reset with ``seed`` once and the expert's rng seeded with it."""
    from gendm.envs.experts import expert_policy

    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    expert, rng = expert_policy(env_id), np.random.default_rng(seed)
    env = gym.make(env_id)
    try:
        returns = np.empty(episodes, dtype=np.float64)
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed if ep == 0 else None)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(expert(obs[None], rng)[0])
                total += float(reward)
                done = terminated or truncated
            returns[ep] = total
    finally:
        env.close()
    return float(returns.mean()), float(returns.std())


_ROW = "{:<26} {:>24} {:>8} {:>10} {:>10} {:>6}"


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure uniform-random returns of the suite tasks.")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per task (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="env reset and action-space seed (default 0)")
    parser.add_argument("--suite", action="append", help="suite(s) to measure (default: all)")
    parser.add_argument(
        "--expert", action="store_true", help="measure the scripted expert (gendm.envs.experts), not random"
    )
    args = parser.parse_args(argv)
    register_environments()  # gendm's own tasks are in the suites

    names = args.suite or list(SUITES)
    tasks = [t for name in names for t in suite_tasks(name)]
    measured = "expert" if args.expert else "random"
    header = ("task", f"{measured} mean ± std", "episodes", "recorded", "expert", "sec")
    print(_ROW.format(*header))
    for env_id in tasks:
        start = time.perf_counter()
        measure = measure_expert_return if args.expert else measure_random_return
        mean, std = measure(env_id, episodes=args.episodes, seed=args.seed)
        ref = REFERENCES.get(env_id)
        recorded = f"{ref.expert_return if args.expert else ref.random_return:.2f}" if ref else "-"
        expert = f"{ref.expert_return:g}" if ref else "-"
        cell = f"{mean:.2f} ± {std:.2f}"
        elapsed = time.perf_counter() - start
        print(_ROW.format(env_id, cell, args.episodes, recorded, expert, f"{elapsed:.1f}"), flush=True)


if __name__ == "__main__":
    _main()
