"""The trainer of the ``lm_finetune`` family: RL fine-tuning of a language model on a text task.

``steps`` counts iterations (``step_unit = "iterations"``). The curve is the task's success rate at
iteration 0 and every ``eval_every`` iterations; ``env_steps`` counts the sampled completions (each
a one-turn episode) and ``grad_steps`` the optimiser steps. The method's builder makes the
fine-tuner, ``builder(config, text_task, *, seed, model_dir, device)``, an object with ``prepare()``
(first-run work, e.g. pretraining a tiny model; not run on resume), ``train(iterations) ->
rewards``, ``measure() -> success``, ``state_dict()`` / ``load_state_dict()``, ``optimizer_steps``,
``completions_per_iteration``, ``last_metrics``, ``parameters_finite()``, ``describe() -> dict`` and
``save(directory)``. Checkpoints (``RUN_DIR/checkpoint``, at every measurement) hold the fine-tuner
and torch's RNG, so a resumed run ends exactly as an uninterrupted one; more ``steps`` continue a
finished run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from gendm.core.config import to_dict
from gendm.core.errors import ConfigError
from gendm.core.methods import TaskInfo
from gendm.train.trainer import Trainer, TrainSettings


class FineTuneTrainer(Trainer):
    step_unit, step_name = "iterations", "iteration"

    def __init__(self, s: TrainSettings) -> None:
        self._begin(s)
        if not s.text_task:
            raise ConfigError(f"{s.algo} fine-tunes on a text task: pass --text-task NAME (e.g. addition).")
        task = s.text_task
        why = self.method.accepts(TaskInfo("text_task", task))
        if why is not None:
            raise ConfigError(f"{s.algo} {why}: pass --text-task NAME (e.g. addition).")
        self.env_id = task
        self.model_dir = s.backend.removeprefix("hf:") if s.backend else None
        config = self.method.make_config(s.overrides, s.backend)
        self.config = dataclasses.replace(config, seed=s.seed) if hasattr(config, "seed") else config
        self.device = torch.device(s.device)
        self.agent: Any = self.method.builder(
            self.config, task, seed=s.seed, model_dir=self.model_dir, device=s.device
        )
        self.iterations = 0
        self.rewards: list[float] = []
        self.pretrain_s = 0.0
        self._init_loop()

    def _start(self) -> None:
        t = time.perf_counter()
        self.agent.prepare()
        self.pretrain_s = time.perf_counter() - t

    def _loop(self) -> None:
        per_iteration = self.agent.completions_per_iteration
        while self.iterations < self.s.steps:
            self.rewards += self.agent.train(1)
            self.iterations += 1
            self.env_steps += per_iteration
            self.grad_steps = self.agent.optimizer_steps
            metrics = self.agent.last_metrics
            self.pending.append({f"losses/{k}": torch.tensor(float(v)) for k, v in metrics.items()})
            self.bar.update(1)
            self._after_step()

    def _measure(self) -> dict[str, Any]:
        success = self.agent.measure()
        return {"return_mean": success, "success_rate": success}

    def _finite(self) -> bool:
        return self.agent.parameters_finite()

    def _score(self, ret: float) -> float | None:
        return None

    # ----------------------------------------------------------------------- checkpoints, summary
    def _identity_config(self) -> dict[str, Any]:
        config = {k: v for k, v in to_dict(self.config).items() if k != "seed"}  # the run's seed
        if self.model_dir is not None:  # a given model is not pretrained: those fields do not matter
            config |= {k: None for k in ("pretrain_steps", "correct_prob") if k in config}
        return config

    def _extra_identity(self) -> dict[str, Any]:
        return {"model": self.model_dir, "eval_every": self.s.eval_every}

    def _extra_state(self) -> dict[str, Any]:
        run = {"iterations": self.iterations, "rewards": self.rewards, "pretrain_s": self.pretrain_s}
        return {"run": run}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        run = state["run"]
        self.iterations = int(run["iterations"])
        self.rewards = [float(r) for r in run["rewards"]]
        self.pretrain_s = float(run["pretrain_s"])

    def _eval_protocol(self) -> dict[str, Any]:
        return {
            "eval_every": self.s.eval_every,
            "every_unit": self.step_unit,
            "measure": self.agent.describe()["success_measure"],
        }

    def _extra_summary(self) -> dict[str, Any]:
        success = [p["success_rate"] for p in self.curve]
        loop = {
            **self.agent.describe(),
            "initial_success": success[0] if success else None,
            "final_success": success[-1] if success else None,
            "iterations": self.iterations,
            "reward_curve": self.rewards,
            "success_curve": [[p[self.step_unit], p["success_rate"]] for p in self.curve],
            "completions": self.env_steps,
            "optimizer_steps": self.grad_steps,
            "resumed_at": self.resumed_at,
            "pretrain_s": round(self.pretrain_s, 2),
            "loop_s": round(max(self._train_seconds() - self.pretrain_s, 0.0), 2),
            "seed": self.s.seed,
        }
        # the bench reads ``loop``; ``gendm finetune`` summaries have always had its keys at the top level
        return {"warnings": [], **loop, "loop": loop, "backend": self.s.backend}


__all__ = ["FineTuneTrainer"]
