"""Register gendm's own environment ids with Gymnasium (idempotent).

``import gendm.envs`` calls :func:`register_environments`; modules inside ``gendm.envs`` that need the
ids (``make.check_env_id``) call it themselves instead of importing their own package, so that no
module of the package imports the package's ``__init__``. Nothing optional is imported: the text
environments' dependencies (the ``text`` extra) load on ``gym.make`` of a text id.
"""

from __future__ import annotations

from gendm.envs import multimodal, text_registry


def register_environments() -> None:
    """Register ``gendm/TwoPathReach-v0`` and the text ids (MiniGrid/BabyAI text, captioned, TextWorld)."""
    multimodal.register()
    text_registry.register()


__all__ = ["register_environments"]
