"""Replay and rollout buffers (and, later, offline datasets)."""

from gendm.data.replay import Batch, ReplayBuffer
from gendm.data.rollout import RolloutBuffer

__all__ = ["Batch", "ReplayBuffer", "RolloutBuffer"]
