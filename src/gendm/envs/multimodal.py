"""A multimodal imitation task: get past a round obstacle, around its left or its right, to a goal.

``gendm/TwoPathReach-v0`` is a 2-D point carried upward by a current, like a boat on a river: it
cannot stop or turn back. It starts just below a disc and must swerve around it to reach a goal
above; the two ways round are mirror images, so the expert goes left or right with probability 1/2.
A policy that averages the two modes (Gaussian behaviour cloning fitted by maximum likelihood, or
MSE regression) steers between them, straight into the disc; a policy that represents both modes
(diffusion, flow, a mixture) commits to one and gets past.

    arena      [-1, 1]^2 (positions are clipped at the walls)
    start      (0, -0.36) + U(-0.005, 0.005)^2, just below the disc
    obstacle   disc at (0, 0), radius 0.3: touching it ends the episode as a failure
    goal       disc at (0, 0.7), radius 0.1: reaching it ends the episode, reward 1, is_success True
    action     (ax, ay) in [-1, 1]^2 -> velocity (ax, 0.75 + 0.25 ay): sideways at up to full speed,
               forward between half and full speed; position += 0.05 * velocity per step
    obs        (x, y): the position
    reward     sparse: 1 on reaching the goal, else 0 (no shaping, so return = success)
    limit      100 steps (truncation)

``info`` carries ``is_success`` at every step and ``side``: the sign of x when the point last crossed
the disc's centre line y = 0 (-1 left, +1 right, 0 not yet), so mode coverage can be measured.

Why averaging fails here, and robustly: the decision is taken at the start state, which is the same
(up to 0.005) in every episode, so the demonstrations hold opposite actions (+-1 sideways) for one
observation and a unimodal fit returns their mean, 0. The point cannot wait (it always moves up at
half speed or more), and the disc is 2-3 steps ahead, too close for the small asymmetries of a fitted
network to grow into a swerve before the crash. Without the current, a behaviour-cloned policy slows
down under the disc, and its asymmetries have time to push it onto one side (measured while
designing this task: 60-100% successes with 256-wide networks, against 0% here).
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np

START = np.array([0.0, -0.36])
START_NOISE = 0.005
GOAL, GOAL_RADIUS = np.array([0.0, 0.7]), 0.1
OBSTACLE_RADIUS = 0.3
"""The disc is centred at the origin."""
SPEED = 0.05
"""Distance per step at full speed along an axis."""
MIN_FORWARD = 0.5
"""Slowest forward speed, as a fraction of SPEED (the current)."""
MAX_STEPS = 100
ENV_ID = "gendm/TwoPathReach-v0"


class TwoPathReach(gym.Env):
    """2-D point carried upward: reach the goal behind a disc, around either side. See the module
    docstring for the layout and the dynamics."""

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = START.copy()
        self._side = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._pos = START + self.np_random.uniform(-START_NOISE, START_NOISE, size=2)
        self._side = 0
        return self._pos.astype(np.float32), {"is_success": False, "side": 0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        ax, ay = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        forward = MIN_FORWARD + (1.0 - MIN_FORWARD) * (ay + 1.0) / 2.0
        before = self._pos
        self._pos = np.clip(before + SPEED * np.array([ax, forward]), -1.0, 1.0)
        if (before[1] < 0.0) != (self._pos[1] < 0.0):
            self._side = int(np.sign(self._pos[0]))
        crashed = np.linalg.norm(self._pos) < OBSTACLE_RADIUS
        success = not crashed and np.linalg.norm(self._pos - GOAL) < GOAL_RADIUS
        info = {"is_success": bool(success), "side": self._side}
        return self._pos.astype(np.float32), float(success), bool(crashed or success), False, info


class TwoPathExpert:
    """Scripted multimodal expert for ``TwoPathReach``: ``expert(obs (n, 2), rng) -> actions (n, 2)``.

    It reads only the position. Undecided (|x| < 0.025, i.e. at the start) it picks a side with a
    fair coin (``side=None``; ``side=-1`` or ``+1`` always takes that side, for unimodal
    demonstrations of the same task) and steps sideways; from then on the sign of x is its side: it
    swerves out at full sideways speed and half forward speed until |x| >= 0.4, rides up beside the
    disc at |x| = 0.45, and above y = 0.2 steers for the goal (pure pursuit). Gaussian noise of std
    ``noise`` is added to every action. Success: 1000 of 1000 episodes (``python -m
    gendm.envs.references --suite imitation --episodes 1000 --expert``).
    """

    def __init__(self, side: int | None = None, noise: float = 0.1) -> None:
        if side not in (None, -1, 1):
            raise ValueError(f"TwoPathExpert side must be None, -1 or 1, got {side!r}.")
        self.side, self.noise = side, noise

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64).reshape(-1, 2)
        actions = np.stack([self._act(x, y, rng) for x, y in obs])
        actions += self.noise * rng.standard_normal(actions.shape)
        return np.clip(actions, -1.0, 1.0).astype(np.float32)

    def _act(self, x: float, y: float, rng: np.random.Generator) -> np.ndarray:
        if y >= 0.2:  # above the disc: head for the goal at full speed
            return np.array([np.clip(-x / max(GOAL[1] - y, SPEED), -1.0, 1.0), 1.0])
        if abs(x) < 0.025:  # the decision, at the start state
            side = self.side if self.side is not None else rng.choice([-1.0, 1.0])
            return np.array([side, -1.0])
        side = np.sign(x)
        if abs(x) < 0.4:  # swerve out: full speed sideways, half speed forward
            return np.array([side, -1.0])
        return np.array([np.clip(4.0 * (0.45 * side - x), -1.0, 1.0), 1.0])  # ride up beside the disc


def register() -> None:
    """Register the environment with Gymnasium (its expert is in ``gendm.envs.experts.EXPERTS``)."""
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=TwoPathReach, max_episode_steps=MAX_STEPS)
