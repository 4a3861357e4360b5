"""Build and play a language agent by name on a text environment: what ``gendm agent`` runs.

Environments: a BabyAI / MiniGrid level (``BabyAI-GoToRedBall-v0`` or its text id
``gendm/BabyAI-GoToRedBall-Text-v0``) or a TextWorld game file (``.z8`` / ``.ulx``, e.g. from
``tw-make`` or :func:`gendm.envs.textworld_env.make_textworld_game`). Agents: ``react``, ``stateact``
and ``react+q``. The re-ranker's Q-model is fitted first from scripted trajectories of the same
environment (BabyAI: the bot with random actions mixed in, on other reset seeds than the evaluation;
TextWorld: walkthrough prefixes then random admissible commands on the same game).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

from gendm.core.errors import ConfigError, suggest
from gendm.envs.text_registry import is_game_file
from gendm.language_agents.base import LanguageAgentConfig
from gendm.language_agents.qmodel import (
    QModel,
    collect_babyai_transitions,
    collect_textworld_transitions,
    hashed_ngram_embed,
    ranking_accuracy,
)
from gendm.language_agents.react import ReActAgent
from gendm.language_agents.rerank import QRerankAgent
from gendm.language_agents.stateact import StateActAgent
from gendm.lm import LanguageModel
from gendm.lm.guard import BackendOptions, FailureGuard

AGENT_NAMES = ("react", "stateact", "react+q")
Q_SEED_OFFSET = 200_000
"""Reset seeds of the Q-model's BabyAI trajectories start here, far from the evaluation's."""


def make_text_env(env: str, max_steps: int | None = None) -> gym.Env:
    """A MiniGrid / BabyAI level (base or ``gendm/...-Text-v0`` id) or a TextWorld game file as a text env."""
    if is_game_file(env):
        from gendm.envs.textworld_env import TextWorldEnv

        if not Path(env).is_file():
            raise ConfigError(
                f"No TextWorld game file {env!r} (make one with `tw-make` or make_textworld_game)."
            )
        return TextWorldEnv(env, max_steps=max_steps or 100)
    from gendm.envs.text_minigrid import make_text_minigrid

    return make_text_minigrid(base_level(env), max_steps=max_steps)


def check_text_env(env: str) -> None:
    """Raise ``ConfigError`` unless ``env`` is an existing TextWorld game file or a MiniGrid / BabyAI
    level (base id or ``gendm/...-Text-v0`` id) that is registered."""
    if is_game_file(env):
        if not Path(env).is_file():
            raise ConfigError(
                f"No TextWorld game file {env!r} (make one with `tw-make` or make_textworld_game)."
            )
        return
    level = base_level(env)
    if not level.startswith(("BabyAI-", "MiniGrid-")) or "-Captioned-" in level:
        raise ConfigError(
            f"{env!r} is not a text environment: language agents play MiniGrid / BabyAI levels "
            "(BabyAI-GoToRedBall-v0 or gendm/BabyAI-GoToRedBall-Text-v0) and TextWorld game files."
        )
    from gendm.envs.make import check_env_id

    check_env_id(level)


def base_level(env: str) -> str:
    """``gendm/BabyAI-GoToRedBall-Text-v0`` -> ``BabyAI-GoToRedBall-v0``; other ids unchanged."""
    return env.removeprefix("gendm/").replace("-Text-", "-")


def fit_q(
    env: str, episodes: int = 40, seed: int = 0, embed: str = "minilm", epochs: int = 40
) -> tuple[QModel, dict]:
    """The re-ranker's Q-model for ``env`` (module docstring) and its held-out ranking accuracy."""
    if is_game_file(env):
        data = collect_textworld_transitions([env], seed=seed)
        held = collect_textworld_transitions([env], seed=seed + 1)
    else:
        level = base_level(env)
        data = collect_babyai_transitions(level, episodes, seed=Q_SEED_OFFSET + seed)
        held = collect_babyai_transitions(level, max(5, episodes // 4), seed=2 * Q_SEED_OFFSET + seed)
    fn = hashed_ngram_embed
    if embed == "minilm":
        from gendm.lm import SentenceEmbedder

        fn = SentenceEmbedder.default().embed
    q = QModel(fn, seed=seed)
    q.fit([t for ep in data for t in ep], method="fqi", epochs=epochs)
    rate, pairs = ranking_accuracy(q, [t for ep in held for t in ep], seed=seed)
    return q, {"ranking_accuracy": rate, "pairs": pairs, "transitions": sum(map(len, data))}


def check_backend_options(backend_spec: str, options: BackendOptions) -> None:
    """Refuse client limits an ``hf:`` backend cannot use (it runs in-process: no timeouts, no retries)."""
    set_fields = options.non_default_client_fields()
    if set_fields and not backend_spec.startswith("openai:"):
        raise ConfigError(
            f"{', '.join(set_fields)} configure an openai: server client; backend {backend_spec!r} runs "
            "in this process and takes none of them. Drop them, or serve the model over HTTP."
        )


def make_agent(
    name: str,
    backend: LanguageModel,
    config: LanguageAgentConfig,
    q: QModel | None = None,
    num_candidates: int = 4,
    proposal: str = "logprobs",
) -> Any:
    """``react``, ``stateact`` or ``react+q`` (which needs ``q``) over ``backend``."""
    if name == "react":
        return ReActAgent(backend, config)
    if name == "stateact":
        return StateActAgent(backend, config)
    if name == "react+q":
        if q is None:
            raise ConfigError("react+q needs a Q-model (fit_q).")
        return QRerankAgent(ReActAgent(backend, config), q, num_candidates=num_candidates, proposal=proposal)
    raise ConfigError(
        f"Unknown language agent {name!r}.{suggest(name, AGENT_NAMES)} Agents: {', '.join(AGENT_NAMES)}."
    )


def play(
    name: str,
    env: str,
    backend_spec: str,
    config: LanguageAgentConfig,
    episodes: int,
    first_seed: int = 0,
    *,
    q_seed: int = 0,
    max_steps: int | None = None,
    cache: str | None = None,
    num_candidates: int = 4,
    proposal: str = "logprobs",
    q_episodes: int = 40,
    options: BackendOptions | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Build agent ``name`` over ``backend_spec`` (with an optional SQLite response ``cache``), fit its
    Q-model if it re-ranks, and play ``episodes`` episodes of ``env`` from reset seed ``first_seed``.
    Returns :func:`~gendm.language_agents.runner.run_episodes`' statistics and the Q-model's
    (held-out ranking accuracy; None without one).

    ``options`` bound the backend (timeouts and retries of an ``openai:`` server) and end the run with
    :class:`~gendm.lm.guard.BackendFailingError` once most model calls fail (:mod:`gendm.lm.guard`)."""
    from gendm.language_agents.runner import run_episodes
    from gendm.lm import CachedBackend, GenerationSettings, make_backend

    options = options or BackendOptions()
    check_backend_options(backend_spec, options)
    backend: Any = make_backend(
        backend_spec,
        settings=GenerationSettings(max_new_tokens=config.max_new_tokens),
        **options.client_kwargs(backend_spec),
    )
    if cache:
        backend = CachedBackend(backend, cache)
    guarded = FailureGuard.from_options(backend, options)
    text_env = make_text_env(env, max_steps)
    try:
        q, q_info = fit_q(env, q_episodes, seed=q_seed) if name == "react+q" else (None, None)
        agent = make_agent(name, guarded, config, q, num_candidates, proposal)
        return run_episodes(agent, text_env, episodes, seed=first_seed), q_info
    finally:
        text_env.close()
        if isinstance(backend, CachedBackend):
            backend.close()
