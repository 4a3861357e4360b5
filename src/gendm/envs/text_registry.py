"""Gymnasium ids of gendm's text environments, registered lazily.

Registration names string entry points only, so ``import gendm.envs`` works without the optional
``text`` extra (minigrid, textworld); those are imported by ``gym.make`` of a text id.

- ``gendm/<MiniGrid or BabyAI id with -Text inserted before the version>``, e.g.
  ``gendm/BabyAI-GoToRedBall-Text-v0``: :class:`~gendm.envs.text_minigrid.MiniGridText` on that
  level (keyword arguments: ``invalid_penalty``, ``max_steps``, and the base env's own). Any other
  MiniGrid / BabyAI id works through :func:`~gendm.envs.text_minigrid.make_text_minigrid`.
- ``gendm/<MiniGrid id with -Captioned inserted>``, e.g. ``gendm/MiniGrid-DoorKey-8x8-Captioned-v0``:
  :class:`~gendm.envs.captioned.CaptionedMiniGrid` (numeric observation, captions in ``info``).
- ``gendm/TextWorld-v0``: :class:`~gendm.envs.textworld_env.TextWorldEnv`; pass ``game_file=`` (made
  by :func:`~gendm.envs.textworld_env.make_textworld_game`) and optionally ``max_steps=``.
"""

from __future__ import annotations

import gymnasium as gym

MINIGRID_BASE_IDS: tuple[str, ...] = (
    "BabyAI-GoToRedBallGrey-v0",
    "BabyAI-GoToRedBall-v0",
    "BabyAI-GoToObj-v0",
    "BabyAI-GoToLocal-v0",
    "BabyAI-PickupLoc-v0",
    "BabyAI-OpenDoor-v0",
    "BabyAI-UnlockLocal-v0",
    "BabyAI-PutNextLocal-v0",
    "BabyAI-GoTo-v0",
    "BabyAI-Pickup-v0",
    "MiniGrid-Empty-5x5-v0",
    "MiniGrid-DoorKey-5x5-v0",
)
"""MiniGrid / BabyAI levels that get a registered ``gendm/...-Text-v0`` id."""

TEXTWORLD_ID = "gendm/TextWorld-v0"

CAPTIONED_BASE_IDS: tuple[str, ...] = (
    "MiniGrid-Empty-5x5-v0",
    "MiniGrid-DoorKey-5x5-v0",
    "MiniGrid-DoorKey-8x8-v0",
    "MiniGrid-KeyCorridorS3R3-v0",
    "MiniGrid-MultiRoom-N4-S5-v1",
)
"""Sparse MiniGrid tasks that get a registered ``gendm/...-Captioned-vN`` id: the flat image view for
PPO with event captions in ``info`` (:class:`~gendm.envs.captioned.CaptionedMiniGrid`), the
exploration-reward benchmark's tasks."""


GAME_SUFFIXES = (".z8", ".ulx", ".z5")
"""TextWorld game files: an env given as such a path is a TextWorld game, not a Gymnasium id."""


def is_game_file(env: str) -> bool:
    return env.endswith(GAME_SUFFIXES)


def captioned_id(env_id: str) -> str:
    """``MiniGrid-DoorKey-8x8-v0`` -> ``gendm/MiniGrid-DoorKey-8x8-Captioned-v0``."""
    name, _, version = env_id.rpartition("-v")
    return f"gendm/{name}-Captioned-v{version}"


def text_id(base_id: str) -> str:
    """``"BabyAI-GoToRedBall-v0"`` -> ``"gendm/BabyAI-GoToRedBall-Text-v0"``."""
    name, _, version = base_id.rpartition("-")
    return f"gendm/{name}-Text-{version}"


def register() -> None:
    """Register the text ids (idempotent); nothing optional is imported."""
    for base in MINIGRID_BASE_IDS:
        if text_id(base) not in gym.registry:
            gym.register(
                text_id(base),
                entry_point="gendm.envs.text_minigrid:make_text_minigrid",
                kwargs={"env_id": base},
            )
    for base in CAPTIONED_BASE_IDS:
        if captioned_id(base) not in gym.registry:
            gym.register(
                captioned_id(base), entry_point="gendm.envs.captioned:make_captioned", kwargs={"env_id": base}
            )
    if TEXTWORLD_ID not in gym.registry:
        gym.register(TEXTWORLD_ID, entry_point="gendm.envs.textworld_env:TextWorldEnv")
