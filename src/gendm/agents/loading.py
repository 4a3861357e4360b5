"""Rebuild the agent of a training checkpoint, and a deterministic policy from it.

``checkpoint_agent`` is what ``gendm data collect --policy RUN_DIR`` and V-GPS use: the checkpoint's
meta names the method and its config, the agent is built for the run's environment spaces and its
weights loaded. ``checkpoint_policy`` wraps it as ``obs -> action`` on raw observations (observation
normaliser restored, actions clipped to the Box bounds), the callable ``gendm.data.collect.collect``
rolls out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from gendm.agents.base import Agent
from gendm.core.checkpoint import load_checkpoint
from gendm.core.config import apply_overrides
from gendm.core.errors import CheckpointError, ConfigError
from gendm.core.methods import METHODS
from gendm.data.collect import Policy, find_checkpoint

OBS_NORM_EPS = 1e-8  # gymnasium.wrappers.NormalizeObservation's epsilon, which training used


def checkpoint_agent(
    path: str | Path, device: str = "cpu"
) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None, dict[str, Any]]:
    """Rebuild the agent of a training checkpoint with its weights: ``(agent, obs_stats, info)``.

    ``obs_stats`` is ``(mean, var)`` of the environment's observation normaliser when the run trained
    with ``normalize_obs`` online (the agent expects ``(obs - mean) / sqrt(var + 1e-8)``), else None;
    ``info`` is the provenance (checkpoint path, algo, env id, env steps)."""
    ckpt = find_checkpoint(path)
    state, meta = load_checkpoint(ckpt, device)
    spec = METHODS.get(meta["algo"])  # importing gendm.agents registered every agent
    if not (isinstance(spec.builder, type) and issubclass(spec.builder, Agent)):
        raise CheckpointError(
            f"Checkpoint {ckpt} is of a {spec.name} run ({spec.family}), not of an agent: only agents' "
            "checkpoints rebuild into a policy."
        )
    config = apply_overrides(spec.config_cls(), meta["config"])
    probe = gym.make(meta["env_id"])
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    agent = spec.builder(config, obs_space, act_space, torch.device(device), total_steps=None)
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"Checkpoint {ckpt} does not fit a {meta['algo']} agent: {e}") from e
    norm = state.get("env_norm", {})
    obs_stats = None
    if config.normalize_obs and "obs/0/mean" in norm:
        obs_stats = (np.asarray(norm["obs/0/mean"]), np.asarray(norm["obs/0/var"]))
    info = {
        "policy": "checkpoint",
        "checkpoint": str(ckpt.resolve()),
        "algo": meta["algo"],
        "env_id": meta["env_id"],
        "checkpoint_env_steps": int(state.get("loop", {}).get("env_steps", -1)),
    }
    return agent, obs_stats, info


def checkpoint_policy(
    path: str | Path, device: str = "cpu", env_id: str | None = None
) -> tuple[Policy, dict[str, Any]]:
    """Rebuild the agent of a training checkpoint as a deterministic policy on raw observations:
    ``(policy, info)``. With ``env_id``, a checkpoint trained on another environment is refused."""
    agent, obs_stats, info = checkpoint_agent(path, device)
    if env_id is not None and info["env_id"] != env_id:
        raise ConfigError(
            f"Checkpoint {path} was trained on {info['env_id']}, not {env_id}: pass --env {info['env_id']}."
        )
    act_space = agent.action_space
    mean, var = obs_stats if obs_stats is not None else (None, None)

    @torch.no_grad()
    def policy(obs: np.ndarray) -> np.ndarray:
        if mean is not None:
            obs = (obs - mean) / np.sqrt(var + OBS_NORM_EPS)
        action = agent.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic=True)
        action = action.cpu().numpy()
        return (
            np.clip(action, act_space.low, act_space.high)
            if isinstance(act_space, gym.spaces.Box)
            else action
        )

    policy.reset_episodes = agent.reset_episodes  # type: ignore[attr-defined]  (action chunks, windows)
    return policy, info


__all__ = ["OBS_NORM_EPS", "checkpoint_agent", "checkpoint_policy"]
