"""RL for generative models: the ``group_advantage`` operator and fine-tuning methods built on it.

``import gendm.finetune`` needs no optional dependency; LOOP's ``from_pretrained`` and the text task
import ``transformers`` / ``tokenizers`` (the ``lm`` extra) when called.
"""

from gendm.finetune.advantage import METHODS, group_advantage
from gendm.finetune.loop import LOOPConfig, LOOPTrainer, Rollout, ppo_token_loss, token_logprobs

__all__ = [
    "METHODS",
    "LOOPConfig",
    "LOOPTrainer",
    "Rollout",
    "group_advantage",
    "ppo_token_loss",
    "token_logprobs",
]
