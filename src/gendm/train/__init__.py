"""Training loops, the evaluation protocol, logging and checkpoints."""

from gendm.train.loop import Trainer, TrainSettings
from gendm.train.offline import OfflineTrainer, train_offline
from gendm.train.online import OnlineTrainer, train

__all__ = ["OfflineTrainer", "OnlineTrainer", "TrainSettings", "Trainer", "train", "train_offline"]
