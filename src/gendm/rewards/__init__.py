"""Intrinsic and learned rewards for exploration: event captions, an asynchronous language-model
annotator, reward models fit from its answers, count normalisation, RND and an ELLM-style embedding
reward, mixed into the environment reward by a vector-env wrapper.

The captioned MiniGrid environments live in ``gendm.envs.captioned`` (``import gendm.envs`` registers
``gendm/MiniGrid-DoorKey-8x8-Captioned-v0`` and the other benchmark tasks);
:func:`register_captioned` adds any other MiniGrid id.
"""

from gendm.envs.captioned import (
    CaptionedMiniGrid,
    events,
    make_captioned,
    register_captioned,
)
from gendm.rewards.annotator import CaptionAnnotator
from gendm.rewards.intrinsic import (
    RND,
    CaptionReward,
    CountNormalizer,
    EmbeddingGoalReward,
    IntrinsicReward,
    LMFeedbackReward,
    ModelReward,
)
from gendm.rewards.models import BradleyTerry, EmbeddingClassifier, LookupReward

__all__ = [
    "RND",
    "BradleyTerry",
    "CaptionAnnotator",
    "CaptionReward",
    "CaptionedMiniGrid",
    "CountNormalizer",
    "EmbeddingClassifier",
    "EmbeddingGoalReward",
    "IntrinsicReward",
    "LMFeedbackReward",
    "LookupReward",
    "ModelReward",
    "events",
    "make_captioned",
    "register_captioned",
]
