"""The language agents as registered methods (family ``language_agent``): ``react``, ``stateact`` and
``react+q``, what ``gendm bench`` and ``gendm.train.train`` run for them.

A method's builder plays it: ``builder(config, env_id, backend, options, *, episodes, first_seed,
q_seed) -> (stats, q_info)``, the statistics of :func:`gendm.language_agents.runner.run_episodes`
and the Q-model's (None without one). Its config is :class:`AgentRunConfig`, the prompting settings
plus what a run needs. It accepts text environments: MiniGrid / BabyAI levels and TextWorld game
files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from gendm.core.config import field, to_dict
from gendm.core.errors import GendmError
from gendm.core.methods import Method, TaskInfo, register_method
from gendm.envs.text_registry import is_game_file
from gendm.language_agents.base import LanguageAgentConfig
from gendm.lm.guard import BackendOptions

PROPOSALS = ("logprobs", "sample")


@dataclass
class AgentRunConfig(LanguageAgentConfig):
    """A language agent's prompting settings plus what a benchmark run of it needs."""

    num_candidates: int = field(4, ge=1)
    """react+q: candidate actions proposed per step."""
    proposal: str = field("logprobs", choices=PROPOSALS)
    """react+q: candidates from the model's log-probabilities of each valid action, or sampled answers."""
    q_episodes: int = field(40, ge=1)
    """react+q: scripted episodes the Q-model is fitted on."""
    max_steps: int = field(0, ge=0)
    """Episode step limit; 0 keeps the environment's own."""
    cache: str = ""
    """SQLite response cache path, shared by runs (repeated prompts cost nothing); empty: no cache."""


def play_method(
    name: str,
    config: AgentRunConfig,
    env_id: str,
    backend: str,
    options: BackendOptions,
    *,
    episodes: int,
    first_seed: int,
    q_seed: int,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Play agent ``name`` with a run's config (the builder of every language-agent method)."""
    from gendm.language_agents.play import play

    agent_config = LanguageAgentConfig(
        **{k: v for k, v in to_dict(config).items() if k in LanguageAgentConfig.__dataclass_fields__}
    )
    return play(
        name,
        env_id,
        backend,
        agent_config,
        episodes,
        first_seed,
        q_seed=q_seed,
        max_steps=config.max_steps or None,
        cache=config.cache or None,
        num_candidates=config.num_candidates,
        proposal=config.proposal,
        q_episodes=config.q_episodes,
        options=options,
    )


def accepts_text_env(task: TaskInfo) -> str | None:
    """None for a MiniGrid / BabyAI level or an existing TextWorld game file; a missing game file is a
    mistake, not a mismatch (its ``ConfigError`` is raised)."""
    from gendm.language_agents.play import check_text_env

    if task.kind != "env":
        return f"is a language agent, and {task.id} is not a text environment"
    try:
        check_text_env(task.id)
    except GendmError as e:
        if is_game_file(task.id):
            raise
        return f"is a language agent, and {str(e).rstrip('.')}"
    return None


def _agent(name: str, summary: str) -> Method:
    return Method(
        name,
        "language_agent",
        AgentRunConfig,
        functools.partial(play_method, name),
        summary,
        accepts=accepts_text_env,
        backend="required",
        backend_kinds=("hf", "openai"),
        backend_options=True,
    )


register_method(_agent("react", "language agent: thought, then action (text environments; needs a backend)"))
register_method(_agent("stateact", "language agent: explicit goal / location / inventory state, then action"))
register_method(_agent("react+q", "ReAct with N candidate actions re-ranked by a learned Q-model (steer)"))
