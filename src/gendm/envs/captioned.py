"""Event captions for the ordinary (image-observation) MiniGrid / BabyAI environments.

A language-model feedback reward (ONI, Motif) or an embedding reward (ELLM) judges *what happened*,
so it needs a caption per step, while PPO still needs a numeric observation to learn from. This
module gives both: :class:`CaptionedMiniGrid` keeps MiniGrid's egocentric 7x7x3 view as the
observation (flattened to a float vector, which is what gendm's MLP agents take) and puts the event
caption of :class:`~gendm.envs.text_minigrid.MiniGridText` ("you picked up the blue key", "you opened
the red door", ...) in ``info["caption"]`` and the mission in ``info["mission"]``.

The captions are produced by an inner ``MiniGridText`` that steps the same environment, so the
text and image views can never disagree, and the caption vocabulary is the one the text agents see.

``info["is_success"]`` is set at every episode end (True when MiniGrid paid its success reward), so
gendm's evaluation protocol reports a success rate for these envs.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from gendm.envs.text_minigrid import ACTION_TEXTS, MiniGridText
from gendm.envs.text_registry import captioned_id

EVENT_SEPARATOR = "; "
"""How ``MiniGridText`` joins several events of one step into one caption."""

_SCALE = np.array([10.0, 5.0, 2.0], dtype=np.float32)
"""Largest object type, colour and state index: the image is divided by these to lie in [0, 1]."""


def events(caption: str) -> list[str]:
    """The single events of a caption ("you moved forward; you see a red key" -> two events).

    Rewards are attached to events rather than whole captions: there are far fewer distinct events
    than combinations of them, so annotations and counts are shared across steps.
    """
    return [e for e in (s.strip() for s in caption.split(EVENT_SEPARATOR)) if e]


class CaptionedMiniGrid(gym.Wrapper):
    """Flat image observation (147 floats in [0, 1]) plus ``info["caption"]`` and ``info["mission"]``.

    Actions are MiniGrid's discrete actions (``Discrete(7)``).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._text = MiniGridText(env)  # steps ``env`` itself; used only for its captions
        shape = env.unwrapped.observation_space["image"].shape
        self.observation_space = gym.spaces.Box(0.0, 1.0, (int(np.prod(shape)),), np.float32)
        self.action_space = gym.spaces.Discrete(len(ACTION_TEXTS))

    def _obs(self) -> np.ndarray:
        image = self.env.unwrapped.gen_obs()["image"].astype(np.float32)
        return (image / _SCALE).reshape(-1)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        _, info = self._text.reset(seed=seed, options=options)
        return self._obs(), self._info(info)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        _, reward, terminated, truncated, info = self._text.step(ACTION_TEXTS[int(action)])
        info = self._info(info)
        if terminated or truncated:
            info["is_success"] = bool(terminated and reward > 0)
        return self._obs(), reward, terminated, truncated, info

    def _info(self, info: dict) -> dict:
        info = dict(info, mission=str(self.env.unwrapped.mission))
        info.pop("invalid_action", None)  # always False here: actions come from a discrete space
        return info


def make_captioned(env_id: str, **kwargs: Any) -> CaptionedMiniGrid:
    """``CaptionedMiniGrid(gym.make(env_id, **kwargs))`` for any MiniGrid / BabyAI id."""
    from gendm.envs.make import check_env_id

    check_env_id(env_id)
    return CaptionedMiniGrid(gym.make(env_id, **kwargs))


def register_captioned(env_id: str) -> str:
    """Register (once) and return the captioned id of ``env_id``, usable with ``gendm.envs.make_env``."""
    new_id = captioned_id(env_id)
    if new_id not in gym.registry:
        gym.register(new_id, entry_point="gendm.envs.captioned:make_captioned", kwargs={"env_id": env_id})
    return new_id
