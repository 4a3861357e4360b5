"""Training: one run skeleton (``trainer``) and each family's loop; ``train(settings)`` runs any
registered method. Importing this package registers every method (``all_methods()``)."""

from gendm.train.dispatch import all_methods, make_trainer, settings_for_task, train
from gendm.train.offline import OfflineTrainer, train_offline
from gendm.train.online import OnlineTrainer
from gendm.train.trainer import Trainer, TrainSettings

all_methods()

__all__ = [
    "OfflineTrainer",
    "OnlineTrainer",
    "TrainSettings",
    "Trainer",
    "all_methods",
    "make_trainer",
    "settings_for_task",
    "train",
    "train_offline",
]
