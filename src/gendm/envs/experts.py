"""Scripted expert policies, by environment id (``gendm data collect --policy expert``).

An expert is a plain function ``policy(obs, rng) -> actions``:

- ``obs``: ``np.ndarray`` of shape ``(num_envs, *obs_shape)``, the raw observations of a vector env;
- ``rng``: a ``np.random.Generator`` (seeded by the caller) for experts that randomise, e.g. to pick
  one of several modes;
- returns ``(num_envs, *action_shape)`` float actions within the Box bounds, or ``(num_envs,)`` int
  actions for Discrete spaces.

``EXPERTS`` maps an env id to a *factory* that builds the policy (so an expert can hold state, such as
a per-episode mode, without sharing it between collections). gendm's own environments' experts are
registered at the bottom of this module; register yours next to your environment::

    from gendm.envs.experts import EXPERTS

    def make_point_mass_expert() -> ExpertPolicy:
        def policy(obs, rng):
            return np.clip(-obs[:, :2], -1.0, 1.0)   # steer towards the origin
        return policy

    EXPERTS.register("gendm/PointMass-v0", make_point_mass_expert)

``expert_policy(env_id)`` builds one, or raises an error listing the ids that have an expert.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gendm.core.registry import Registry
from gendm.envs import multimodal

ExpertPolicy = Callable[[np.ndarray, np.random.Generator], np.ndarray]

EXPERTS: Registry[Callable[[], ExpertPolicy]] = Registry(
    "expert policy",
    hint="Scripted experts exist only for the ids listed; use --policy random or a checkpoint directory.",
)


def expert_policy(env_id: str) -> ExpertPolicy:
    """A fresh scripted expert for ``env_id``; unknown ids raise UnknownNameError listing the others."""
    return EXPERTS.get(env_id)()


def _cartpole() -> ExpertPolicy:
    """A linear controller on (x, x_dot, theta, theta_dot); 500 (the maximum) on 20 of 20 seeds."""

    def policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x, x_dot, theta, theta_dot = obs.T
        return (10 * theta + 2 * theta_dot + 0.5 * x + x_dot > 0).astype(np.int64)

    return policy


def _pendulum() -> ExpertPolicy:
    """Energy-pumping swing-up, then PD control near the top; mean return -137 over 20 seeds
    (RL Zoo's SAC: -157)."""

    def policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cos, sin, theta_dot = obs.T
        theta = np.arctan2(sin, cos)
        energy = 0.5 * theta_dot**2 + 15.0 * (cos - 1.0)  # 0 at rest upright (3g / 2l = 15)
        direction = np.sign(theta_dot + 1e-6)
        swing = np.where(energy < 0, 2.0, -2.0) * direction
        hold = np.clip(-(10.0 * theta + 2.0 * theta_dot), -2.0, 2.0)
        return np.where(cos > 0.85, hold, swing)[:, None].astype(np.float32)

    return policy


def _mountain_car_continuous() -> ExpertPolicy:
    """Full throttle along the velocity (pumps energy); return about 89 (RL Zoo's SAC: 94.7)."""

    def policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.where(obs[:, 1:2] >= 0, 1.0, -1.0).astype(np.float32)

    return policy


EXPERTS.register("CartPole-v1", _cartpole)
EXPERTS.register("Pendulum-v1", _pendulum)
EXPERTS.register("MountainCarContinuous-v0", _mountain_car_continuous)
EXPERTS.register(multimodal.ENV_ID, multimodal.TwoPathExpert)

__all__ = ["EXPERTS", "ExpertPolicy", "expert_policy"]
