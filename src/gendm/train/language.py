"""Language methods under the training contract: what ``gendm bench`` runs for a method whose ``algo``
is a language agent (``react``, ``stateact``, ``react+q``) or the RL fine-tuner of a language model
(``loop``).

Both write ``summary.json`` with the keys of :func:`gendm.train.train`'s summary (``final_return``,
``env_steps``, ``grad_steps``, ``wall_s``, ``curve``, ...), so the bench store, statistics and report
treat them like every other method:

- **A language agent** prompts a frozen model: it learns nothing from interaction, so ``env_steps`` and
  ``grad_steps`` are 0 and its curve is one point at step 0: the mean return of ``eval_episodes``
  episodes with reset seeds ``EVAL_SEED_OFFSET + seed * eval_episodes + i`` (each seed plays other
  episodes; every method of a seed plays the same ones). Success rate, unreadable answers, invalid
  actions, LM calls and cache hits sit beside it; unreadable answers become a warning. ``react+q``
  fits its Q-model first (:func:`gendm.language_agents.play.fit_q`).
- **LOOP** counts ``steps`` in iterations. The curve is the task's success rate at iteration 0 and
  every ``eval_every`` iterations (``step_unit = "iterations"``); ``env_steps`` counts the sampled
  completions (each one a one-turn episode) and ``grad_steps`` the optimiser steps. Without a model
  directory a tiny GPT-2 is built and pretrained on noisy answers first (``gendm finetune loop``).

A language agent's backend is bounded by the method's ``backend_options`` table
(:class:`gendm.lm.BackendOptions`: ``timeout_s``, ``max_retries``, ``deadline_s`` of an ``openai:``
server, and ``max_failure_rate`` / ``failure_min_calls``, past which a run whose model calls mostly
fail ends as a failed run with the server's last error instead of scoring its fallback actions).

An interrupted LOOP run resumes from its checkpoint (``RUN_DIR/checkpoint``, saved at every
measurement) and ends as an uninterrupted one would; an interrupted agent run plays again from the
first episode (with a response cache, the answers already paid for cost nothing).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gendm.core.atomic import atomic_write_json
from gendm.core.config import apply_overrides, check, to_dict
from gendm.core.errors import ConfigError
from gendm.finetune.loop import LOOPConfig
from gendm.finetune.text_tasks import TINY_MODEL_DEFAULTS
from gendm.language_agents.base import LanguageAgentConfig
from gendm.lm.guard import BackendOptions
from gendm.train.loop import EVAL_SEED_OFFSET, versions

AGENT_METHODS = ("react", "stateact", "react+q")
FINETUNE_METHODS = ("loop",)
LANGUAGE_METHODS = AGENT_METHODS + FINETUNE_METHODS
LANGUAGE_SUMMARIES = {
    "react": "language agent: thought, then action (text environments; needs a backend)",
    "stateact": "language agent: explicit goal / location / inventory state, then action",
    "react+q": "ReAct with N candidate actions re-ranked by a learned Q-model through steer",
    "loop": "RL fine-tuning of a language model, leave-one-out PPO without a critic (text tasks)",
}
TEXT_TASKS = ("text:addition",)
"""Tasks of the fine-tuners (``text_task = "addition"`` in a bench spec)."""
PROPOSALS = ("logprobs", "sample")


@dataclass
class AgentRunConfig(LanguageAgentConfig):
    """A language agent's prompting settings plus what a benchmark run of it needs."""

    num_candidates: int = 4
    """react+q: candidate actions proposed per step."""
    proposal: str = "logprobs"
    """react+q: candidates from the model's log-probabilities of each valid action, or sampled answers."""
    q_episodes: int = 40
    """react+q: scripted episodes the Q-model is fitted on."""
    max_steps: int = 0
    """Episode step limit; 0 keeps the environment's own."""
    cache: str = ""
    """SQLite response cache path, shared by runs (repeated prompts cost nothing); empty: no cache."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.proposal in PROPOSALS, "proposal", f"must be one of {', '.join(PROPOSALS)}.")
        check(self.num_candidates >= 1, "num_candidates", "must be >= 1.")
        check(self.q_episodes >= 1, "q_episodes", "must be >= 1.")
        check(self.max_steps >= 0, "max_steps", "must be >= 0 (0: the environment's limit).")


@dataclass
class LOOPRunConfig(LOOPConfig):
    """LOOP's settings plus the addition task and the tiny model's noisy pretraining."""

    max_operand: int = 4
    """Operands 0..max_operand."""
    pretrain_steps: int = 800
    """Tiny model only: supervised steps on noisy answers before RL."""
    correct_prob: float = 0.3
    """Tiny model only: probability that a pretraining answer is the true sum."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_operand >= 1, "max_operand", "must be >= 1.")
        check(self.pretrain_steps >= 0, "pretrain_steps", "must be >= 0.")
        check(0 <= self.correct_prob <= 1, "correct_prob", "must be in [0, 1].")


def language_config(algo: str, overrides: dict[str, Any] | list[str], model: str | None = None) -> Any:
    """The resolved config of a language method; a bad field raises ``ConfigError`` naming it."""
    if algo in AGENT_METHODS:
        return apply_overrides(AgentRunConfig(), overrides)
    if algo in FINETUNE_METHODS:
        defaults = {} if model else TINY_MODEL_DEFAULTS
        return apply_overrides(LOOPRunConfig(**defaults), overrides)
    raise ConfigError(f"{algo!r} is not a language method ({', '.join(LANGUAGE_METHODS)}).")


def parse_backend_options(table: dict[str, Any] | None, backend: str | None) -> BackendOptions:
    """A language agent's ``backend_options`` table, validated (``ConfigError`` names a bad field, or
    a client limit given to an ``hf:`` backend)."""
    from gendm.language_agents.play import check_backend_options

    options = apply_overrides(BackendOptions(), table or {})
    if backend is not None:
        check_backend_options(backend, options)
    return options


def run_language_method(
    algo: str,
    task: str,
    *,
    seed: int,
    steps: int,
    eval_every: int,
    eval_episodes: int,
    overrides: dict[str, Any],
    backend: str | None,
    out_dir: Path,
    device: str = "cpu",
    threads: int | None = None,
    backend_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one language method on one task (module docstring); write and return ``summary.json``.
    ``backend_options`` is a language agent's ``backend_options`` table."""
    if threads:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = language_config(algo, overrides, backend)
    t0 = time.perf_counter()
    if algo in AGENT_METHODS:
        if backend is None:
            raise ConfigError(f"{algo} needs a language-model backend (hf:DIR or openai:URL#MODEL).")
        options = parse_backend_options(backend_options, backend)
        body = _play(algo, task, seed, eval_episodes, config, backend, options)
    else:
        if task not in TEXT_TASKS:
            raise ConfigError(f"{algo} fine-tunes on a text task ({', '.join(TEXT_TASKS)}), not {task!r}.")
        model = backend.removeprefix("hf:") if backend else None
        body = _finetune(config, seed, steps, eval_every, model, device, out_dir / "checkpoint")
    wall = time.perf_counter() - t0
    last = body["curve"][-1]
    summary = {
        "algo": algo,
        "env_id": task,
        "seed": seed,
        "status": "ok",
        "error": None,
        "final_return": last["return_mean"],
        "final_return_std": last.get("return_std"),
        "final_score": None,
        "success_rate": last.get("success_rate"),
        **body,
        "wall_s": round(wall, 3),
        "train_s": round(wall, 3),
        "env_steps_per_s": body["env_steps"] / wall if wall > 0 else None,
        "grad_steps_per_s": body["grad_steps"] / wall if wall > 0 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "config": to_dict(config),
        "backend": backend,
        "versions": versions(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _play(
    algo: str,
    task: str,
    seed: int,
    episodes: int,
    config: AgentRunConfig,
    backend: str,
    options: BackendOptions,
) -> dict:
    from gendm.language_agents.play import play

    agent_config = LanguageAgentConfig(
        **{k: v for k, v in to_dict(config).items() if k in LanguageAgentConfig.__dataclass_fields__}
    )
    stats, q_info = play(
        algo,
        task,
        backend,
        agent_config,
        episodes,
        EVAL_SEED_OFFSET + seed * episodes,
        q_seed=seed,
        max_steps=config.max_steps or None,
        cache=config.cache or None,
        num_candidates=config.num_candidates,
        proposal=config.proposal,
        q_episodes=config.q_episodes,
        options=options,
    )
    returns = [d["return"] for d in stats["episodes_detail"]]
    point = {
        "env_steps": 0,
        "return_mean": stats["mean_return"],
        "return_std": float(torch.tensor(returns).std(unbiased=False)) if returns else 0.0,
        "success_rate": stats["success_rate"],
        "wall_s": stats["wall_s"],
    }
    warnings = []
    turns = stats["episodes"] * stats["mean_steps"]
    unreadable = stats["parse_failures"] - stats["backend_errors"]
    if stats["backend_errors"]:
        warnings.append(
            f"the language model failed on {stats['backend_errors']} of {turns:.0f} turns, the fallback "
            f"acted ({stats['last_error']})"
        )
    if unreadable:
        warnings.append(
            f"{unreadable} of {turns:.0f} answers were unreadable after the retry (the fallback acted)"
        )
    return {
        "env_steps": 0,
        "grad_steps": 0,
        "step_unit": "env_steps",
        "curve": [point],
        "warnings": warnings,
        "eval_protocol": {"episodes": episodes, "first_reset_seed": EVAL_SEED_OFFSET + seed * episodes},
        "agent_stats": {k: v for k, v in stats.items() if k != "episodes_detail"},
        "episodes_detail": stats["episodes_detail"],
        "q_model": q_info,
        "backend_options": to_dict(options),
    }


def _finetune(
    config: LOOPRunConfig,
    seed: int,
    iterations: int,
    eval_every: int,
    model: str | None,
    device: str,
    checkpoint_dir: Path,
) -> dict:
    from gendm.finetune.text_tasks import finetune_addition

    loop_fields = {k: v for k, v in to_dict(config).items() if k in LOOPConfig.__dataclass_fields__}
    _, summary = finetune_addition(
        LOOPConfig(**loop_fields | {"seed": seed}),
        iterations,
        seed,
        model_dir=model,
        max_operand=config.max_operand,
        pretrain_steps=config.pretrain_steps,
        correct_prob=config.correct_prob,
        eval_every=eval_every,
        device=device,
        checkpoint_dir=checkpoint_dir,
    )
    per_iteration = config.prompts_per_iteration * config.group_size
    curve = [
        {"iterations": it, "return_mean": s, "success_rate": s, "env_steps": it * per_iteration}
        for it, s in summary["success_curve"]
    ]
    return {
        "env_steps": summary["completions"],
        "grad_steps": summary["optimizer_steps"],
        "step_unit": "iterations",
        "curve": curve,
        "warnings": [],
        "eval_protocol": {
            "eval_every": eval_every,
            "every_unit": "iterations",
            "measure": summary["success_measure"],
        },
        "loop": {k: v for k, v in summary.items() if k != "success_curve"},
    }
