"""An example fine-tuner in one file (family ``lm_finetune``): a tabular "language model" over the
addition task's answers, one softmax per prompt, fine-tuned by REINFORCE with leave-one-out
advantages (``group_advantage``). A stand-in for a network, so the example needs no transformers;
not part of the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gendm.core.config import Config, field
from gendm.core.methods import Method, register_method
from gendm.finetune.advantage import group_advantage
from gendm.finetune.text_tasks import TEXT_TASKS, AdditionTask, accepts_text_task


@dataclass
class TabularConfig(Config):
    group_size: int = field(4, ge=2)
    """Answers sampled per prompt (leave-one-out needs two)."""
    learning_rate: float = field(20.0, gt=0)
    """SGD step on the logits."""
    seed: int = 0
    """Seed of the sampling generator (the trainer sets it to the run's seed)."""


class TabularFineTuner:
    def __init__(self, config: TabularConfig, task_id: str, *, seed: int, model_dir: str | None, device: str):
        self.config, self.task = config, TEXT_TASKS[task_id]()
        self.prompts, self.answers = self.task.prompts(), self.task.answers
        self.logits = torch.zeros(len(self.prompts), len(self.answers), requires_grad=True)
        self.correct = torch.tensor([self.answers.index(AdditionTask.answer(p)) for p in self.prompts])
        self.opt = torch.optim.SGD([self.logits], lr=config.learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer_steps, self.last_metrics = 0, {}
        self.completions_per_iteration = len(self.prompts) * config.group_size

    def prepare(self) -> None:
        """Nothing to pretrain."""

    def train(self, iterations: int) -> list[float]:
        rewards_per_iteration = []
        for _ in range(iterations):
            probs = torch.softmax(self.logits, -1)
            picks = torch.multinomial(probs.detach(), self.config.group_size, True, generator=self.generator)
            rewards = (picks == self.correct[:, None]).float()
            advantages = group_advantage(rewards)
            loss = -(advantages * probs.gather(1, picks).log()).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.optimizer_steps += 1
            self.last_metrics = {"loss": float(loss.detach()), "reward": float(rewards.mean())}
            rewards_per_iteration.append(float(rewards.mean()))
        return rewards_per_iteration

    @torch.no_grad()
    def measure(self) -> float:
        """Exact success: the mean probability of the right answer."""
        return float(torch.softmax(self.logits, -1).gather(1, self.correct[:, None]).mean())

    def parameters_finite(self) -> bool:
        return bool(torch.isfinite(self.logits).all())

    def describe(self) -> dict[str, str]:
        return {"task": "addition", "model": "tabular softmax", "success_measure": "exact probability"}

    def state_dict(self) -> dict[str, Any]:
        return {
            "logits": self.logits.detach().clone(),
            "opt": self.opt.state_dict(),
            "generator": self.generator.get_state(),
            "optimizer_steps": self.optimizer_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"].cpu())
        self.optimizer_steps = int(state["optimizer_steps"])

    def save(self, directory) -> None:
        torch.save(self.logits.detach(), f"{directory}/logits.pt")


register_method(
    Method("tabular_rloo", "lm_finetune", TabularConfig, TabularFineTuner, "example", accepts_text_task)
)
