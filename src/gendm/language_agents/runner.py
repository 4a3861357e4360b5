"""Play a language agent for a number of episodes and report what it achieved and what it cost.

Success is TextWorld's ``info["won"]`` when present, else MiniGrid's rule (terminated with a
positive reward). ``invalid_actions`` counts the environment's ``info["invalid_action"]`` flags: in
MiniGridText that includes the ``noop`` fallback ("look" is no MiniGrid command and takes no step),
so read it beside ``parse_failures`` (the agent's count of unreadable answers). ``cache_hits`` is the
change of ``backend.hits`` when the backend is a :class:`gendm.lm.CachedBackend` (else 0).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym

from gendm.language_agents.base import valid_actions


def run_episodes(agent: Any, env: gym.Env, episodes: int, seed: int = 0) -> dict[str, Any]:
    """Play ``episodes`` episodes (reset seeds ``seed, seed+1, ...``); return summary statistics and the
    per-episode records (``episodes_detail``)."""
    hits0 = getattr(agent.backend, "hits", 0)
    before = agent.counters.as_dict()
    detail = []
    t0 = time.perf_counter()
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        agent.reset(obs, info, seed=seed + i)
        ret, steps, invalid, done, success = 0.0, 0, 0, False, False
        while not done:
            action = agent.act(obs, valid_actions(env, info))
            obs, reward, terminated, truncated, info = env.step(action)
            ret += float(reward)
            steps += 1
            invalid += int(bool(info.get("invalid_action", False)))
            done = terminated or truncated
            success = bool(info["won"]) if "won" in info else bool(terminated and reward > 0)
        detail.append(
            {"seed": seed + i, "success": success, "return": ret, "steps": steps, "invalid": invalid}
        )
    after = agent.counters.as_dict()
    n = max(episodes, 1)
    return {
        "episodes": episodes,
        "success_rate": sum(d["success"] for d in detail) / n,
        "mean_return": sum(d["return"] for d in detail) / n,
        "mean_steps": sum(d["steps"] for d in detail) / n,
        "invalid_actions": sum(d["invalid"] for d in detail),
        **{k: after[k] - before[k] for k in after},
        "cache_hits": getattr(agent.backend, "hits", 0) - hits0,
        "last_error": agent.counters.last_error,
        "wall_s": time.perf_counter() - t0,
        "episodes_detail": detail,
    }
