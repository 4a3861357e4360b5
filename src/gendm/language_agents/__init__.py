"""Language-model agents that act in text environments: ReAct, StateAct, and Q re-ranking.

They are prompts around a frozen :class:`gendm.lm.LanguageModel`, not RL agents trained by
``gendm.train``, so they live here rather than in ``gendm.agents`` (whose import registers every RL
method and whose contract is ``act`` / ``update`` / ``state_dict``). Only the Q-model of
:mod:`~gendm.language_agents.qmodel` is trained, offline, from logged trajectories. Importing the
package registers the agents as methods (:mod:`~gendm.language_agents.methods`).
"""

from gendm.language_agents import methods  # noqa: F401  (registration)
from gendm.language_agents.base import Counters, LanguageAgentConfig, Turn, valid_actions
from gendm.language_agents.qmodel import (
    QModel,
    Transition,
    collect_babyai_transitions,
    collect_textworld_transitions,
    hashed_ngram_embed,
    monte_carlo_returns,
    ranking_accuracy,
)
from gendm.language_agents.react import ReActAgent, ReActParser, ReActStep
from gendm.language_agents.rerank import QRerankAgent
from gendm.language_agents.runner import run_episodes
from gendm.language_agents.stateact import StateActAgent, StateActParser, StateActStep

__all__ = [
    "Counters",
    "LanguageAgentConfig",
    "QModel",
    "QRerankAgent",
    "ReActAgent",
    "ReActParser",
    "ReActStep",
    "StateActAgent",
    "StateActParser",
    "StateActStep",
    "Transition",
    "Turn",
    "collect_babyai_transitions",
    "collect_textworld_transitions",
    "hashed_ngram_embed",
    "monte_carlo_returns",
    "ranking_accuracy",
    "run_episodes",
    "valid_actions",
]
