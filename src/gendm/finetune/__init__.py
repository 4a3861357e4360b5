"""RL for generative models: the ``group_advantage`` operator and fine-tuning methods built on it.

``import gendm.finetune`` needs no optional dependency; LOOP's ``from_pretrained`` and the text task
import ``transformers`` / ``tokenizers`` (the ``lm`` extra) when called. Importing the package
registers the ``loop`` method (:mod:`gendm.finetune.text_tasks`).
"""

from gendm.finetune.advantage import METHODS, group_advantage
from gendm.finetune.loop import LOOPConfig, LOOPTrainer, Rollout, ppo_token_loss, token_logprobs
from gendm.finetune.text_tasks import AdditionTask, LOOPRunConfig, finetune_addition

__all__ = [
    "METHODS",
    "AdditionTask",
    "LOOPConfig",
    "LOOPRunConfig",
    "LOOPTrainer",
    "Rollout",
    "finetune_addition",
    "group_advantage",
    "ppo_token_loss",
    "token_logprobs",
]
