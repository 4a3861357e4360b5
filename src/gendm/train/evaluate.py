"""Evaluation protocol: N deterministic episodes on a separate environment, fixed seeds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from gendm.agents.base import Agent


def episode_returns(info: dict) -> list[tuple[float, int]]:
    """(return, length) of every episode that ended this step (SAME_STEP autoreset infos)."""
    final = info.get("final_info")
    if not final or "episode" not in final:
        return []
    mask = final["_episode"]
    return [(float(r), int(n)) for r, n, m in zip(final["episode"]["r"], final["episode"]["l"], mask) if m]


def evaluate(agent: Agent, env: gym.vector.VectorEnv, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` deterministic episodes; the env is reset with ``seed`` first, so every
    evaluation of a run sees the same initial states."""
    obs, _ = env.reset(seed=seed)
    returns: list[float] = []
    device = agent.device
    while len(returns) < episodes:
        action = agent.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic=True)
        obs, _, _, _, info = env.step(_to_env_action(action, env.single_action_space))
        returns += [r for r, _ in episode_returns(info)]
    return np.asarray(returns[:episodes], dtype=np.float64)


def _to_env_action(action: torch.Tensor, space: gym.Space) -> np.ndarray:
    a = action.cpu().numpy()
    if isinstance(space, gym.spaces.Box):
        return np.clip(a, space.low, space.high)
    return a
