"""Training loops, the evaluation protocol, logging and checkpoints."""

from gendm.train.online import OnlineTrainer, TrainSettings, train

__all__ = ["OnlineTrainer", "TrainSettings", "train"]
