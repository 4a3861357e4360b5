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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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
    checkpoint_dir: str | Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """LOOP on :class:`AdditionTask`: returns the trainer and a summary (success before/after, curve).

    Without ``model_dir``: a tiny GPT-2 built here and pretrained on noisy answers (module docstring),
    success measured exactly (:meth:`AdditionTask.success_probability`). With ``model_dir`` (any local
    causal LM): success is the mean reward of ``config.group_size`` sampled completions per prompt,
    drawn from a forked RNG so that measuring does not change training. ``eval_every``: success is also
    measured every that many iterations (``success_curve``: ``[iteration, success]`` pairs from 0).

    ``checkpoint_dir``: the trainer, RNG states and curves are saved there (safetensors + JSON) after
    pretraining and at every measurement, and a later call with the same settings resumes from it
    (more ``iterations`` continue a finished run); the resumed run equals an uninterrupted one.
    """
    import dataclasses
    import time

    from gendm.finetune.loop import LOOPTrainer

    task = AdditionTask(max_operand=max_operand)
    identity = {
        "config": dataclasses.asdict(config),
        "seed": seed,
        "model": model_dir,
        "max_operand": max_operand,
        "pretrain_steps": pretrain_steps if model_dir is None else None,
        "correct_prob": correct_prob if model_dir is None else None,
        "eval_every": eval_every,
    }
    saved = _resume(checkpoint_dir, identity)
    t0 = time.perf_counter()
    if model_dir is None:
        tok = task.build_tokenizer()
        model = task.build_model(tok, seed=seed).to(device)
        if saved is None:
            task.pretrain_noisy(model, tok, steps=pretrain_steps, correct_prob=correct_prob, seed=seed)
        trainer = LOOPTrainer(model, tok, task.reward, config)

        def success() -> float:
            return task.success_probability(trainer.model, trainer.tokenizer)
    else:
        trainer = LOOPTrainer.from_pretrained(model_dir, task.reward, config, device=device)

        def success() -> float:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                return float(trainer.rollout(task.prompts()).rewards.mean())

    if saved is None:
        torch.manual_seed(seed)
        pretrain_s = time.perf_counter() - t0
        curve: list[float] = []
        success_curve = [[0, success()]]
    else:
        trainer.load_state_dict(saved["trainer"])
        torch.set_rng_state(saved["torch_rng"].cpu())
        pretrain_s, curve = saved["pretrain_s"], list(saved["reward_curve"])
        success_curve = [list(point) for point in saved["success_curve"]]

    def save() -> None:
        if checkpoint_dir is not None:
            from gendm.core.checkpoint import save_checkpoint_dir

            state = {
                "trainer": trainer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "pretrain_s": pretrain_s,
                "reward_curve": curve,
                "success_curve": success_curve,
            }
            save_checkpoint_dir(checkpoint_dir, state, {"identity": identity})

    if saved is None:
        save()
    t1 = time.perf_counter()
    every = eval_every or iterations
    while len(curve) < iterations:
        curve += trainer.train(task.prompts(), min(every, iterations - len(curve)), progress=progress)
        success_curve.append([len(curve), success()])
        save()
    summary = {
        "task": f"addition (operands 0..{max_operand})",
        "model": model_dir or "tiny GPT-2 (2x32), pretrained on noisy answers",
        "success_measure": "exact probability" if model_dir is None else "mean reward of sampled completions",
        "initial_success": success_curve[0][1],
        "final_success": success_curve[-1][1],
        "iterations": len(curve),
        "reward_curve": curve,
        "success_curve": success_curve,
        "completions": len(curve) * config.prompts_per_iteration * config.group_size,
        "optimizer_steps": trainer.optimizer_steps,
        "resumed_at": None if saved is None else len(saved["reward_curve"]),
        "pretrain_s": round(pretrain_s, 2),
        "loop_s": round(time.perf_counter() - t1, 2),
        "seed": seed,
    }
    return trainer, summary


def _resume(checkpoint_dir: str | Path | None, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state of a run with this ``identity`` in ``checkpoint_dir``; None if there is none."""
    if checkpoint_dir is None:
        return None
    from gendm.core.checkpoint import find_checkpoint_dir, load_checkpoint
    from gendm.core.errors import CheckpointError

    found = find_checkpoint_dir(checkpoint_dir)
    if found is None:
        return None
    state, meta = load_checkpoint(found)
    saved, mine = meta.get("identity") or {}, json.loads(json.dumps(identity))  # both as JSON values
    diff = sorted(k for k in mine if saved.get(k) != mine[k])
    if diff:
        raise CheckpointError(
            f"{checkpoint_dir} holds a LOOP checkpoint of a different run (differs in: {', '.join(diff)}). "
            "Use another output directory, or delete the checkpoint to start over."
        )
    return state
