"""Replay and rollout buffers; offline datasets (Minari format), normalisation and samplers."""

from gendm.data.dataset import OfflineDataset
from gendm.data.minari_io import list_datasets, load_dataset, save_dataset
from gendm.data.normalize import ActionScaler, Normalizer
from gendm.data.replay import Batch, ReplayBuffer
from gendm.data.rollout import RolloutBuffer
from gendm.data.samplers import SequenceBatch, SequenceSampler, TrajectorySampler, TransitionSampler
from gendm.data.validation import validate

__all__ = [
    "ActionScaler",
    "Batch",
    "Normalizer",
    "OfflineDataset",
    "ReplayBuffer",
    "RolloutBuffer",
    "SequenceBatch",
    "SequenceSampler",
    "TrajectorySampler",
    "TransitionSampler",
    "list_datasets",
    "load_dataset",
    "save_dataset",
    "validate",
]
