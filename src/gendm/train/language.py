"""The trainer of the ``language_agent`` family: a prompting agent over a frozen language model
(``react``, ``stateact``, ``react+q``; ``gendm.language_agents.methods``), under the run skeleton's
``summary.json`` contract, so the bench store, statistics and report treat it like every other method.

A language agent learns nothing from interaction: ``env_steps`` and ``grad_steps`` stay 0 and its
curve is one point at step 0, the mean return of ``eval_episodes`` episodes with reset seeds
``EVAL_SEED_OFFSET + seed * eval_episodes + i`` (each seed plays other episodes; every method of a
seed plays the same ones). Success rate, unreadable answers, invalid actions, LM calls and cache hits
sit beside it; unreadable answers become a warning. ``react+q`` fits its Q-model first
(:func:`gendm.language_agents.play.fit_q`).

The backend is bounded by ``TrainSettings.backend_options`` (:class:`gendm.lm.BackendOptions`:
``timeout_s``, ``max_retries``, ``deadline_s`` of an ``openai:`` server, and ``max_failure_rate`` /
``failure_min_calls``, past which a run whose model calls mostly fail ends as a failed run with the
server's last error instead of scoring its fallback actions). The run keeps no checkpoint: an
interrupted run plays again from the first episode (with a response cache, the answers already paid
for cost nothing).
"""

from __future__ import annotations

from typing import Any

import torch

from gendm.core.config import apply_overrides, to_dict
from gendm.core.errors import ConfigError
from gendm.core.methods import TaskInfo
from gendm.lm.guard import BackendOptions
from gendm.train.trainer import EVAL_SEED_OFFSET, Trainer, TrainSettings


def parse_backend_options(table: dict[str, Any] | None, backend: str | None) -> BackendOptions:
    """A ``backend_options`` table, validated (``ConfigError`` names a bad field, or a client limit
    given to an ``hf:`` backend)."""
    from gendm.language_agents.play import check_backend_options

    options = apply_overrides(BackendOptions(), table or {})
    if backend is not None:
        check_backend_options(backend, options)
    return options


class LanguageAgentTrainer(Trainer):
    checkpoints = False

    def __init__(self, s: TrainSettings) -> None:
        self._begin(s)
        self.env_id = s.env_id or ""
        if not self.env_id:
            raise ConfigError(f"{s.algo} plays a text environment: pass --env LEVEL_OR_GAME_FILE.")
        why = self.method.accepts(TaskInfo("env", self.env_id))
        if why is not None:
            raise ConfigError(f"{s.algo} {why}.")
        self.config = self.method.make_config(s.overrides, s.backend)
        self.options = parse_backend_options(s.backend_options, s.backend)
        self.device = torch.device(s.device)
        self.agent = None
        self.first_seed = EVAL_SEED_OFFSET + s.seed * s.eval_episodes
        self.details: dict[str, Any] = {}
        self._init_loop()

    def _loop(self) -> None:
        """Nothing to train: the run is its one evaluation at step 0."""

    def _finite(self) -> bool:
        return True

    def _score(self, ret: float) -> float | None:
        return None

    def _measure(self) -> dict[str, Any]:
        s = self.s
        stats, q_info = self.method.builder(
            self.config,
            self.env_id,
            s.backend,
            self.options,
            episodes=s.eval_episodes,
            first_seed=self.first_seed,
            q_seed=s.seed,
        )
        returns = [d["return"] for d in stats["episodes_detail"]]
        turns = stats["episodes"] * stats["mean_steps"]
        unreadable = stats["parse_failures"] - stats["backend_errors"]
        warnings = []
        if stats["backend_errors"]:
            warnings.append(
                f"the language model failed on {stats['backend_errors']} of {turns:.0f} turns, the "
                f"fallback acted ({stats['last_error']})"
            )
        if unreadable:
            warnings.append(
                f"{unreadable} of {turns:.0f} answers were unreadable after the retry (the fallback acted)"
            )
        self.details = {
            "warnings": warnings,
            "agent_stats": {k: v for k, v in stats.items() if k != "episodes_detail"},
            "episodes_detail": stats["episodes_detail"],
            "q_model": q_info,
        }
        return {
            "return_mean": stats["mean_return"],
            "return_std": float(torch.tensor(returns).std(unbiased=False)) if returns else 0.0,
            "success_rate": stats["success_rate"],
        }

    def _eval_protocol(self) -> dict[str, Any]:
        return {"episodes": self.s.eval_episodes, "first_reset_seed": self.first_seed}

    def _extra_summary(self) -> dict[str, Any]:
        return {
            "warnings": [],
            **self.details,
            "backend_options": to_dict(self.options),
            "backend": self.s.backend,
        }


__all__ = ["LanguageAgentTrainer", "parse_backend_options"]
