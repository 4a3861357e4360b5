"""Evaluation protocol: N deterministic episodes on a separate environment, fixed seeds."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from gendm.agents.base import Agent


@dataclass
class EvalResult:
    returns: np.ndarray
    """(episodes,) undiscounted returns, in the order the episodes ended."""
    lengths: np.ndarray
    """(episodes,) episode lengths."""
    successes: np.ndarray | None
    """(episodes,) bool ``info["is_success"]`` at each episode's last step; None when the env does not
    report it."""

    @property
    def success_rate(self) -> float | None:
        return None if self.successes is None else float(self.successes.mean())


def evaluation_point(
    agent: Agent, env: gym.vector.VectorEnv, episodes: int, seed: int, deterministic: bool = True
) -> dict[str, float]:
    """One evaluation of the agent families as a curve point's measurement: ``return_mean``,
    ``return_std`` and, when the env reports ``is_success``, ``success_rate``."""
    result = evaluate_episodes(agent, env, episodes, seed, deterministic=deterministic)
    point = {"return_mean": float(result.returns.mean()), "return_std": float(result.returns.std())}
    if result.success_rate is not None:
        point["success_rate"] = result.success_rate
    return point


def episode_returns(info: dict) -> list[tuple[float, int]]:
    """(return, length) of every episode that ended this step (SAME_STEP autoreset infos)."""
    final = info.get("final_info")
    if not final or "episode" not in final:
        return []
    mask = final["_episode"]
    return [(float(r), int(n)) for r, n, m in zip(final["episode"]["r"], final["episode"]["l"], mask) if m]


def episode_successes(info: dict) -> list[bool | None]:
    """``is_success`` of every episode that ended this step (None where the env did not report it),
    aligned with ``episode_returns(info)``."""
    final = info.get("final_info")
    if not final or "episode" not in final:
        return []
    reported = final.get("_is_success", np.zeros_like(final["_episode"]))
    flags = final.get("is_success", reported)
    return [bool(s) if r else None for s, r, m in zip(flags, reported, final["_episode"]) if m]


def evaluate_episodes(
    agent: Agent, env: gym.vector.VectorEnv, episodes: int, seed: int, deterministic: bool = True
) -> EvalResult:
    """Run ``episodes`` deterministic episodes; the env is reset with ``seed`` first, so every evaluation
    of a run sees the same initial states.

    ``deterministic=False`` samples the policy's actions instead, from a torch RNG seeded with ``seed``
    (forked, on the agent's device too: training's random state is untouched). Partially observed
    tasks such as MiniGrid need it: an argmax policy that cannot tell two cells apart loops forever
    where its sampled twin succeeds.

    Agents with per-episode state learn when episodes start through the optional
    ``agent.reset_episodes(mask)`` hook: all True after the reset, then True for every sub-env whose
    episode just ended (its next observation is already the first one of a new episode).
    """
    device = torch.device(agent.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _episodes(agent, env, episodes, seed, deterministic)


def _episodes(
    agent: Agent, env: gym.vector.VectorEnv, episodes: int, seed: int, deterministic: bool
) -> EvalResult:
    reset_episodes = getattr(agent, "reset_episodes", None)
    obs, _ = env.reset(seed=seed)
    if reset_episodes is not None:
        reset_episodes(np.ones(env.num_envs, dtype=bool))
    done: list[tuple[float, int, bool | None]] = []
    device = agent.device
    while len(done) < episodes:
        action = agent.act(
            torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic=deterministic
        )
        obs, _, terms, truncs, info = env.step(_to_env_action(action, env.single_action_space))
        ended = np.asarray(terms) | np.asarray(truncs)
        if ended.any():
            done += [(r, n, s) for (r, n), s in zip(episode_returns(info), episode_successes(info))]
            if reset_episodes is not None:
                reset_episodes(ended)
    done = done[:episodes]
    flags = [s for _, _, s in done]
    return EvalResult(
        returns=np.asarray([r for r, _, _ in done], dtype=np.float64),
        lengths=np.asarray([n for _, n, _ in done], dtype=np.int64),
        successes=None if any(s is None for s in flags) else np.asarray(flags, dtype=bool),
    )


def evaluate(agent: Agent, env: gym.vector.VectorEnv, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` deterministic episodes (``evaluate_episodes(...).returns``)."""
    return evaluate_episodes(agent, env, episodes, seed).returns


def _to_env_action(action: torch.Tensor, space: gym.Space) -> np.ndarray:
    a = action.cpu().numpy()
    if isinstance(space, gym.spaces.Box):
        return np.clip(a, space.low, space.high)
    return a
