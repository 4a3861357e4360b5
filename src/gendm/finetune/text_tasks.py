"""A text task small enough to fine-tune a language model with RL on a CPU in seconds.

``AdditionTask``: the prompt is ``"add a b ="`` with single digits a, b in 0..max_operand, the answer is
the sum as one word-level token (``"add 3 4 =" -> "7"``), reward 1 if the completion's first word is
the sum, else 0. The vocabulary is tiny (``add``, ``=``, the numbers 0..2*max_operand and four special
tokens), built locally with ``tokenizers``, so nothing is downloaded.

RL fine-tuning needs a policy that sometimes succeeds. ``pretrain_noisy`` trains a tiny GPT-2 by
supervised learning on *noisy* answers: the true sum with probability ``correct_prob``, otherwise a
uniformly random number. A model that fitted this data exactly would sample the right answer with
probability ``correct_prob + (1 - correct_prob) / num_answers`` (0.38 for the defaults); the default
800 steps leave it short of that -- 0.23-0.34 for model seeds 0-3, while seed 4 stays at chance
(0.12). Either way the policy knows the format and (mostly) leans toward the truth, which reward
fine-tuning then sharpens.
``success_probability`` measures success exactly (no sampling noise): the model's mean probability,
at temperature 1, of the correct first answer token.

The method ``loop`` (family ``lm_finetune``) registers here: its builder is
:meth:`AdditionFineTuner.build`, its config :class:`LOOPRunConfig`; ``gendm.train`` runs it with
run identity, checkpoints and resume. :func:`finetune_addition` is the same run in one call, without a
run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gendm.core.config import field, to_dict
from gendm.core.methods import Method, TaskInfo, register_method
from gendm.finetune.loop import LOOPConfig

TINY_MODEL_DEFAULTS = {"learning_rate": 1e-3, "max_new_tokens": 2, "group_size": 4}
"""LOOPConfig overrides for the tiny model learned from scratch (a larger step, two-token answers)."""


@dataclass
class AdditionTask:
    max_operand: int = 4
    """Operands are 0..max_operand; answers 0..2*max_operand."""

    @property
    def answers(self) -> list[str]:
        return [str(s) for s in range(2 * self.max_operand + 1)]

    def prompts(self) -> list[str]:
        """Every prompt of the task, ``(max_operand + 1) ** 2`` of them."""
        r = range(self.max_operand + 1)
        return [f"add {a} {b} =" for a in r for b in r]

    @staticmethod
    def answer(prompt: str) -> str:
        _, a, b, _ = prompt.split()
        return str(int(a) + int(b))

    def reward(self, prompt: str, completion: str) -> float:
        """1.0 if the completion's first word is the sum, else 0.0."""
        words = completion.split()
        return float(bool(words) and words[0] == self.answer(prompt))

    def build_tokenizer(self) -> Any:
        """A word-level ``PreTrainedTokenizerFast`` over the task's words (built locally)."""
        from gendm.lm.tiny import word_tokenizer

        return word_tokenizer(vocab=["add", "=", *self.answers])

    def build_model(self, tokenizer: Any, n_layer: int = 2, n_embd: int = 32, seed: int = 0) -> Any:
        """A tiny randomly initialised GPT-2 (no dropout) for this vocabulary."""
        from gendm.lm.tiny import tiny_gpt2

        return tiny_gpt2(tokenizer, n_layer=n_layer, n_embd=n_embd, n_positions=16, seed=seed)

    def pretrain_noisy(
        self,
        model: Any,
        tokenizer: Any,
        correct_prob: float = 0.3,
        steps: int = 800,
        batch_size: int = 64,
        lr: float = 3e-3,
        seed: int = 0,
    ) -> None:
        """Supervised learning on ``"add a b = c [EOS]"`` with c correct w.p. ``correct_prob``, else random.

        Only the answer and EOS tokens are in the loss. Fresh noise every batch, so the model fits the
        noisy answer *distribution* rather than memorising one noisy label per prompt.
        """
        gen = torch.Generator().manual_seed(seed)
        prompt_ids, target = self._encode(tokenizer, self.prompts())
        answer_ids = torch.tensor(tokenizer.convert_tokens_to_ids(self.answers))
        eos = torch.full((batch_size, 1), tokenizer.eos_token_id)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(steps):
            rows = torch.randint(len(prompt_ids), (batch_size,), generator=gen)
            noise = answer_ids[torch.randint(len(answer_ids), (batch_size,), generator=gen)]
            correct = torch.rand(batch_size, generator=gen) < correct_prob
            answer = torch.where(correct, target[rows], noise)
            ids = torch.cat([prompt_ids[rows], answer[:, None], eos], dim=1)
            labels = ids.clone()
            labels[:, : prompt_ids.shape[1]] = -100
            loss = model(input_ids=ids.to(model.device), labels=labels.to(model.device)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()

    def _encode(self, tokenizer: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt token ids (all prompts have 4 tokens) and the id of each prompt's answer."""
        ids = torch.tensor([tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts])
        target = torch.tensor(tokenizer.convert_tokens_to_ids([self.answer(p) for p in prompts]))
        return ids, target

    @torch.no_grad()
    def success_probability(self, model: Any, tokenizer: Any, prompts: list[str] | None = None) -> float:
        """Mean over prompts of p(first completion token = the sum) at temperature 1: the exact success
        rate of sampling one completion per prompt."""
        ids, target = self._encode(tokenizer, prompts or self.prompts())
        logits = model(input_ids=ids.to(model.device)).logits[:, -1].float()
        probs = torch.softmax(logits, dim=-1).cpu()
        return float(probs.gather(1, target[:, None]).mean())


TEXT_TASKS: dict[str, type[AdditionTask]] = {"text:addition": AdditionTask}
"""The text tasks fine-tuners run on (``text_task = "addition"`` in a bench spec)."""


@dataclass
class LOOPRunConfig(LOOPConfig):
    """LOOP's settings plus the addition task and the tiny model's noisy pretraining."""

    max_operand: int = field(4, ge=1)
    """Operands 0..max_operand."""
    pretrain_steps: int = field(800, ge=0)
    """Tiny model only: supervised steps on noisy answers before RL."""
    correct_prob: float = field(0.3, ge=0, le=1)
    """Tiny model only: probability that a pretraining answer is the true sum."""


class AdditionFineTuner:
    """LOOP on :class:`AdditionTask`: the fine-tuner the ``lm_finetune`` trainer runs for ``loop``.

    Without ``model_dir``: a tiny GPT-2 built here (seeded by ``seed``), pretrained on noisy answers by
    ``prepare()`` (module docstring), success measured exactly
    (:meth:`AdditionTask.success_probability`). With ``model_dir`` (any local causal LM): success is
    the mean reward of ``config.group_size`` sampled completions per prompt, drawn from a forked RNG
    so that measuring does not change training. The ``LOOPTrainer`` is built after pretraining (its
    KL reference is the pretrained model), or before loading a checkpoint.
    """

    def __init__(
        self, config: LOOPConfig, task: AdditionTask, seed: int, model_dir: str | None, device: str
    ) -> None:
        self.config, self.task, self.seed, self.model_dir, self.device = config, task, seed, model_dir, device
        self.pretrain_steps, self.correct_prob = 800, 0.3
        if model_dir is None:
            self.tokenizer = task.build_tokenizer()
            self.model = task.build_model(self.tokenizer, seed=seed).to(device)
        self._trainer: Any = None

    @classmethod
    def build(
        cls, config: LOOPRunConfig, task_id: str, *, seed: int, model_dir: str | None, device: str = "cpu"
    ) -> AdditionFineTuner:
        """The builder of the ``loop`` method: ``config`` is a :class:`LOOPRunConfig`."""
        loop_fields = {k: v for k, v in to_dict(config).items() if k in LOOPConfig.__dataclass_fields__}
        out = cls(LOOPConfig(**loop_fields), TEXT_TASKS[task_id](config.max_operand), seed, model_dir, device)
        out.pretrain_steps, out.correct_prob = config.pretrain_steps, config.correct_prob
        return out

    @property
    def trainer(self) -> Any:
        if self._trainer is None:
            from gendm.finetune.loop import LOOPTrainer

            if self.model_dir is None:
                self._trainer = LOOPTrainer(self.model, self.tokenizer, self.task.reward, self.config)
            else:
                self._trainer = LOOPTrainer.from_pretrained(
                    self.model_dir, self.task.reward, self.config, device=self.device
                )
        return self._trainer

    def prepare(self) -> None:
        """First-run work: the tiny model's noisy pretraining, then ``torch.manual_seed(seed)``."""
        if self.model_dir is None:
            steps, prob, seed = self.pretrain_steps, self.correct_prob, self.seed
            self.task.pretrain_noisy(self.model, self.tokenizer, steps=steps, correct_prob=prob, seed=seed)
        self.trainer  # noqa: B018  (built now: after pretraining, before the seed)
        torch.manual_seed(self.seed)

    def train(self, iterations: int, progress: bool = False) -> list[float]:
        """``iterations`` LOOP iterations; the mean reward of each."""
        return self.trainer.train(self.task.prompts(), iterations, progress=progress)

    def measure(self) -> float:
        """The success rate (exact for the tiny model, sampled from a forked RNG otherwise)."""
        trainer = self.trainer
        if self.model_dir is None:
            return self.task.success_probability(trainer.model, trainer.tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            return float(trainer.rollout(self.task.prompts()).rewards.mean())

    @property
    def optimizer_steps(self) -> int:
        return self.trainer.optimizer_steps

    @property
    def completions_per_iteration(self) -> int:
        return self.config.prompts_per_iteration * self.config.group_size

    @property
    def last_metrics(self) -> dict[str, float]:
        return self.trainer.metrics[-1] if self.trainer.metrics else {}

    def parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.trainer.model.parameters())

    def describe(self) -> dict[str, str]:
        return {
            "task": f"addition (operands 0..{self.task.max_operand})",
            "model": self.model_dir or "tiny GPT-2 (2x32), pretrained on noisy answers",
            "success_measure": (
                "exact probability" if self.model_dir is None else "mean reward of sampled completions"
            ),
        }

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state)

    def save(self, directory: str | Path) -> None:
        """Save the fine-tuned model and its tokenizer (a Hugging Face model directory)."""
        self.trainer.model.save_pretrained(directory)
        self.trainer.tokenizer.save_pretrained(directory)


def finetune_addition(
    config: Any,
    iterations: int = 150,
    seed: int = 0,
    model_dir: str | None = None,
    max_operand: int = 4,
    pretrain_steps: int = 800,
    correct_prob: float = 0.3,
    progress: bool = False,
    eval_every: int | None = None,
    device: str = "cpu",
) -> tuple[Any, dict[str, Any]]:
    """LOOP on :class:`AdditionTask` in this process, without checkpoints: returns the ``LOOPTrainer``
    and a summary (success before/after, curves). ``eval_every``: success is also measured every that
    many iterations (``success_curve``: ``[iteration, success]`` pairs from 0). A run with a run
    directory, checkpoints and resume is ``gendm.train.train(TrainSettings("loop", text_task=
    "addition", ...))`` (what ``gendm finetune loop`` and the bench run); it measures the same curve.
    """
    import time

    t0 = time.perf_counter()
    tuner = AdditionFineTuner(config, AdditionTask(max_operand), seed, model_dir, device)
    tuner.pretrain_steps, tuner.correct_prob = pretrain_steps, correct_prob
    tuner.prepare()
    pretrain_s = time.perf_counter() - t0
    success_curve = [[0, tuner.measure()]]
    curve: list[float] = []
    t1 = time.perf_counter()
    every = eval_every or iterations
    while len(curve) < iterations:
        curve += tuner.train(min(every, iterations - len(curve)), progress=progress)
        success_curve.append([len(curve), tuner.measure()])
    summary = {
        **tuner.describe(),
        "initial_success": success_curve[0][1],
        "final_success": success_curve[-1][1],
        "iterations": len(curve),
        "reward_curve": curve,
        "success_curve": success_curve,
        "completions": len(curve) * tuner.completions_per_iteration,
        "optimizer_steps": tuner.optimizer_steps,
        "resumed_at": None,
        "pretrain_s": round(pretrain_s, 2),
        "loop_s": round(time.perf_counter() - t1, 2),
        "seed": seed,
    }
    return tuner.trainer, summary


def accepts_text_task(task: TaskInfo) -> str | None:
    if task.kind == "text_task" and task.id in TEXT_TASKS:
        return None
    return f"fine-tunes a language model on a text task, and {task.id} is not one"


def _tiny_model_defaults(backend: str | None) -> dict[str, Any]:
    return {} if backend else dict(TINY_MODEL_DEFAULTS)


register_method(
    Method(
        "loop",
        "lm_finetune",
        LOOPRunConfig,
        AdditionFineTuner.build,
        "RL fine-tuning of a language model, leave-one-out PPO without a critic (text tasks)",
        accepts=accepts_text_task,
        backend="optional",
        backend_kinds=("hf",),
        config_defaults=_tiny_model_defaults,
    )
)
