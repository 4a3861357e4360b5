"""``train(settings)``: run any registered method. The method's family (``gendm.core.methods``) picks
its trainer here; every trainer is the one run skeleton of ``gendm.train.trainer`` with its family's
loop. A new family registers its trainer with :func:`register_trainer`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gendm.core.methods import FAMILIES, METHODS, Method
from gendm.core.registry import Registry
from gendm.train.intrinsic import IntrinsicTrainer
from gendm.train.language import LanguageAgentTrainer
from gendm.train.lm_finetune import FineTuneTrainer
from gendm.train.offline import OfflineTrainer
from gendm.train.online import OnlineTrainer
from gendm.train.trainer import Trainer, TrainSettings


@dataclass(frozen=True)
class FamilyTrainer:
    make: Callable[[TrainSettings], Trainer]
    task_field: str = "env_id"
    """The ``TrainSettings`` field a bench task id goes to: ``env_id``, ``dataset`` or ``text_task``."""


TRAINERS: Registry[FamilyTrainer] = Registry("method family", hint=f"Families: {', '.join(FAMILIES)}.")


def register_trainer(
    family: str, make: Callable[[TrainSettings], Trainer], task_field: str = "env_id"
) -> None:
    """Run the methods of ``family`` with ``make(settings)`` (a ``Trainer``)."""
    TRAINERS.register(family, FamilyTrainer(make, task_field))


def _online(s: TrainSettings) -> Trainer:
    return IntrinsicTrainer(s) if s.intrinsic is not None else OnlineTrainer(s)


register_trainer("off_policy", _online)
register_trainer("on_policy", _online)
register_trainer("offline", OfflineTrainer, task_field="dataset")
register_trainer("language_agent", LanguageAgentTrainer)
register_trainer("lm_finetune", FineTuneTrainer, task_field="text_task")


def all_methods() -> Registry[Method]:
    """The method registry with every method of the package registered."""
    import gendm.agents
    import gendm.finetune.text_tasks
    import gendm.language_agents.methods  # noqa: F401  (each import registers its methods)

    return METHODS


def make_trainer(settings: TrainSettings) -> Trainer:
    """The trainer of ``settings.algo``'s family, built (``.run()`` runs it)."""
    return TRAINERS.get(all_methods().get(settings.algo).family).make(settings)


def train(settings: TrainSettings) -> dict[str, Any]:
    """Run (or resume) one run of any registered method; write and return its ``summary.json``."""
    return make_trainer(settings).run()


def settings_for_task(algo: str, task: str, **fields: Any) -> TrainSettings:
    """``TrainSettings`` running ``algo`` on a bench task id (an env id, a dataset or ``text:NAME``),
    put in the field ``algo``'s family reads it from."""
    family = TRAINERS.get(all_methods().get(algo).family)
    return TrainSettings(algo, **{family.task_field: task}, **fields)


__all__ = ["TRAINERS", "all_methods", "make_trainer", "register_trainer", "settings_for_task", "train"]
