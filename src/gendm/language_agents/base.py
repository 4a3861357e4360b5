"""What every prompting agent shares: its config, its turn record, counters and the fallback action.

A language agent is not an RL agent of ``gendm.agents`` (``act`` / ``update`` / ``state_dict``,
trained by ``gendm.train``): it is a prompt around a frozen language model, so it lives in its own
package with a smaller contract: ``reset(observation, info, seed)`` at the start of an episode and
``act(observation, valid_actions) -> command`` at each turn (see :mod:`gendm.language_agents.runner`).

**Unreadable answers.** The answer is parsed against the environment's valid actions (MiniGridText's
commands, TextWorld's admissible commands) with :func:`gendm.lm.parse_with_retry`: one retry with
the format restated, then :data:`gendm.lm.UNKNOWN`. An UNKNOWN is never silently mapped to some
action: it is counted (``counters.parse_failures``) and replaced by the configured fallback:

- ``"noop"`` (default): send ``noop_action`` ("look"). In TextWorld "look" is an admissible command
  that changes nothing; in MiniGridText it is not a command, so the wrapper takes *no* step and flags
  ``info["invalid_action"]`` (the attempt still counts toward the step limit). Either way a model
  that cannot answer makes no progress, which keeps success rates honest.
- ``"random"``: a uniformly random valid action (the agent's own seeded generator). This can make
  progress the model did not choose, so it flatters a weak model; use it to study recovery, not to
  report the model's ability.

The episode always continues; the next prompt shows what happened. A *backend* that fails on most
calls (HTTP 500, garbage, timeouts) is not played around: :func:`gendm.language_agents.play.play`
puts a :class:`gendm.lm.FailureGuard` in front of it, which ends the run with the server's last error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from gendm.core.config import Config, field
from gendm.core.errors import ConfigError

FALLBACKS = ("noop", "random")


@dataclass
class LanguageAgentConfig(Config):
    """Prompting and fallback settings shared by ReAct, StateAct and the re-ranking agent."""

    history: int = field(6, ge=0)
    """How many past turns (observation, thought, action) the prompt shows."""
    fallback: str = field("noop", choices=FALLBACKS)
    """What to do with an unreadable answer after the retry: ``noop`` or ``random`` (module docstring)."""
    noop_action: str = "look"
    """The command sent by the ``noop`` fallback."""
    retries: int = field(1, ge=0)
    """Re-asks with the format restated before an answer counts as unreadable."""
    chat: bool = True
    """Send the prompt as one chat message (instruction models) instead of a text completion."""
    max_new_tokens: int = field(96, ge=1)
    """Upper bound on the tokens of one answer."""
    few_shot: str = ""
    """Optional worked examples, pasted verbatim between the instructions and the history."""
    max_task_chars: int = 1200
    """The task text (mission, or TextWorld's objective and first room) is cut to this length."""


@dataclass
class Turn:
    """One turn as the agent saw and answered it; the history the next prompts show."""

    observation: str
    action: str
    thought: str = ""
    state: dict[str, str] = dataclasses.field(default_factory=dict)
    """StateAct's explicit state (goal, current location, inventory) written this turn."""
    fallback: bool = False
    """True when the action came from the fallback, not from the model."""


@dataclass
class Counters:
    """What an agent cost and how often the model failed to give a usable answer."""

    lm_calls: int = 0
    """Calls to the language model: one per generation request (a retry is a second call) and one per
    batched ``logprobs`` call (scoring all valid actions counts one, whatever the backend does inside)."""
    parse_failures: int = 0
    """Turns whose answer stayed unreadable after the retry (each one used the fallback)."""
    retried: int = 0
    """Turns that needed the retry (whether or not it then succeeded)."""
    backend_errors: int = 0
    """Of the parse failures, those where the backend itself failed (server down, timeouts after its
    retries); ``last_error`` keeps the latest reason."""
    last_error: str = ""

    def as_dict(self) -> dict[str, int]:
        return {
            "lm_calls": self.lm_calls,
            "parse_failures": self.parse_failures,
            "retried": self.retried,
            "backend_errors": self.backend_errors,
        }


def valid_actions(env: gym.Env, info: dict[str, Any]) -> list[str]:
    """The commands the agent may choose from now: TextWorld's ``admissible_commands`` when the info
    has them, else the env's fixed ``action_texts`` (MiniGridText)."""
    if info.get("admissible_commands"):
        return list(info["admissible_commands"])
    try:
        return list(env.get_wrapper_attr("action_texts"))
    except AttributeError as e:
        raise ConfigError(
            f"{env!r} lists no valid actions: expected info['admissible_commands'] or env.action_texts."
        ) from e


def task_text(observation: str, max_chars: int) -> str:
    """The episode's task: MiniGrid's "Mission: ..." line, else the whole first observation
    (TextWorld's objective and starting room)."""
    for line in observation.splitlines():
        if line.strip().lower().startswith("mission:"):
            return line.strip()
    return observation.strip()[:max_chars]


def fallback_action(config: LanguageAgentConfig, valid: Sequence[str], rng: np.random.Generator) -> str:
    """The action sent in place of an unreadable answer (module docstring)."""
    if config.fallback == "random" and valid:
        return str(valid[int(rng.integers(len(valid)))])
    return config.noop_action
