"""ReAct (Yao et al., 2023): the model writes a "Thought:" line, then an "Action:" line, each turn.

The prompt is one text: instructions (answer format and the valid actions), the task (mission or
objective), optional few-shot examples, the last ``history`` turns as ``Observation / Thought /
Action`` blocks, and the current observation. Generation stops at the next "Observation:", so a
model that keeps writing cannot invent the environment's answer.

The answer is read by :class:`ReActParser`: only the *first* "Action:" line counts (thoughts often
name several actions) and its text is matched against the valid actions with
:class:`gendm.lm.ActionParser`; no "Action:" line means unreadable. Unreadable answers get one retry
(:func:`gendm.lm.parse_with_retry`) and then the fallback of :mod:`gendm.language_agents.base`.

:meth:`ReActAgent.propose` gives N candidate actions for step-level re-ranking
(:mod:`gendm.language_agents.rerank`): N sampled answers, or the valid actions ranked by the
model's log-probability of "Action: <a>" after the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gendm.language_agents.base import Counters, LanguageAgentConfig, Turn, fallback_action, task_text
from gendm.lm import (
    UNKNOWN,
    ActionParser,
    LanguageModel,
    Message,
    NotSupportedError,
    ParseResult,
    parse_with_retry,
)

_LINE = re.compile(r"^\s*[*#>-]*\s*(thought|action)\s*[*]*\s*:\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass
class ReActStep:
    """A parsed ReAct answer."""

    thought: str
    action: str


class ReActParser:
    """Reads "Thought: ..." and the first "Action: ..." line; the action must name one valid action."""

    def __init__(self, valid: Sequence[str]) -> None:
        self.actions = ActionParser(list(valid))
        self.format_hint = (
            'Reply with one line "Thought: <your reasoning>" and then one line "Action: <action>", '
            f"where <action> is exactly one of: {', '.join(valid)}."
        )

    def fields(self, text: str) -> dict[str, str]:
        """The first value of each "Key: value" line of the answer, keys lower-cased."""
        found: dict[str, str] = {}
        for m in _LINE.finditer(text):
            found.setdefault(m.group(1).lower(), m.group(2))
        return found

    def __call__(self, text: str) -> Any:
        if not isinstance(text, str):
            return UNKNOWN
        f = self.fields(text)
        if "action" not in f:
            return UNKNOWN
        action = self.actions(f["action"])
        return UNKNOWN if action is UNKNOWN else self.step(f, action)

    def step(self, fields: dict[str, str], action: str) -> ReActStep:
        """The parsed answer, from its fields and its (valid) action."""
        return ReActStep(fields.get("thought", ""), action)


class ReActAgent:
    """A ReAct prompting agent over any :class:`gendm.lm.LanguageModel` (module docstring)."""

    name = "react"
    answer_format = (
        "Each turn, answer with exactly two lines:\n"
        "Thought: <one sentence of reasoning about what to do next>\n"
        "Action: <exactly one of the valid actions>"
    )

    def __init__(self, backend: LanguageModel, config: LanguageAgentConfig | None = None) -> None:
        self.backend = backend
        self.config = config or LanguageAgentConfig()
        self.counters = Counters()
        self.history: list[Turn] = []
        self.task = ""
        self.rng = np.random.default_rng(0)
        self.last_prompt = ""

    # -- episode ----------------------------------------------------------------------------------
    def reset(self, observation: str, info: dict[str, Any] | None = None, seed: int | None = None) -> None:
        """Start an episode: forget the history, read the task from the first observation."""
        self.history = []
        self.task = task_text(observation, self.config.max_task_chars)
        self.rng = np.random.default_rng(seed)

    def act(self, observation: str, valid: Sequence[str]) -> str:
        """Ask the model for this turn's action; an unreadable answer becomes the fallback."""
        prompt = self.prompt(observation, valid)
        result = self._ask(prompt, self.parser(valid))
        if result.ok:
            self.history.append(self.turn_from(observation, result.value))
            return result.value.action
        self.counters.parse_failures += 1
        if result.reason and result.reason.startswith("backend error"):
            self.counters.backend_errors += 1
            self.counters.last_error = result.reason
        action = fallback_action(self.config, valid, self.rng)
        self.history.append(Turn(observation, action, thought="(unreadable answer)", fallback=True))
        return action

    def record(self, observation: str, action: str, thought: str = "") -> None:
        """Add a turn chosen elsewhere (e.g. by a re-ranker) so later prompts show it."""
        self.history.append(Turn(observation, action, thought=thought))

    # -- prompt and parsing (StateAct overrides these) --------------------------------------------
    def parser(self, valid: Sequence[str]) -> ReActParser:
        return ReActParser(valid)

    def turn_from(self, observation: str, step: ReActStep) -> Turn:
        return Turn(observation, step.action, thought=step.thought)

    def render_turn(self, turn: Turn) -> str:
        return f"Observation: {turn.observation}\nThought: {turn.thought}\nAction: {turn.action}"

    def preamble(self) -> list[str]:
        """Extra prompt blocks between the history and the current observation (StateAct: its state)."""
        return []

    def prompt(self, observation: str, valid: Sequence[str]) -> str:
        """The full prompt text for this turn (also kept in ``last_prompt`` for inspection)."""
        c = self.config
        blocks = [
            "You are an agent playing a text game. " + self.answer_format,
            f"Task: {self.task}",
        ]
        if c.few_shot:
            blocks.append(f"Examples:\n{c.few_shot.strip()}")
        shown = self.history[-c.history :] if c.history else []
        if shown:
            blocks.append("Recent turns:\n" + "\n\n".join(self.render_turn(t) for t in shown))
        blocks += self.preamble()
        blocks.append(f"Valid actions: {', '.join(valid)}")
        blocks.append(f"Observation: {observation}")
        self.last_prompt = "\n\n".join(blocks) + "\n"
        return self.last_prompt

    # -- model calls ------------------------------------------------------------------------------
    def _request(self, prompt: str) -> str | list[Message]:
        return [{"role": "user", "content": prompt}] if self.config.chat else prompt

    def _ask(self, prompt: str, parser: ReActParser) -> ParseResult:
        result = parse_with_retry(
            self.backend,
            self._request(prompt),
            parser,
            retries=self.config.retries,
            max_new_tokens=self.config.max_new_tokens,
            stop=("\nObservation:",),
        )
        self.counters.lm_calls += max(1, result.attempts)
        self.counters.retried += int(result.attempts > 1)
        return result

    def propose(self, observation: str, valid: Sequence[str], n: int, mode: str = "sample") -> list[str]:
        """N candidate actions for re-ranking (the history is not changed).

        ``sample``: N answers at temperature 1 with seeds 0..N-1 (seeded, so a cache can replay them),
        unreadable ones dropped (possibly leaving fewer than N, or none). ``logprobs``: the N valid
        actions with the highest log p("Action: <a>" | prompt) (one call scoring every valid action).
        """
        prompt = self.prompt(observation, valid)
        if mode == "logprobs":
            prefix = prompt + "Thought: I will choose the best valid action.\nAction: "
            try:
                scores = self.backend.logprobs([prefix] * len(valid), list(valid))
            except NotSupportedError as e:
                raise NotSupportedError(
                    f"{str(e).rstrip('.')}. The re-ranker proposes candidates by log-probability "
                    "(proposal='logprobs'); with this backend propose sampled answers instead: `gendm agent "
                    'react+q --proposal sample`, or set = { proposal = "sample" } in a bench spec.'
                ) from e
            self.counters.lm_calls += 1
            order = np.argsort(-np.asarray(scores), kind="stable")[:n]
            return [valid[i] for i in order]
        parser = self.parser(valid)
        out = []
        for i in range(n):
            (answer,) = _call(self.backend, self._request(prompt), self.config, seed=i)
            self.counters.lm_calls += 1
            step = parser(answer)
            if step is not UNKNOWN:
                out.append(step.action)
        return out


def _call(
    backend: LanguageModel, request: str | list[Message], config: LanguageAgentConfig, seed: int
) -> list[str]:
    gen = dict(max_new_tokens=config.max_new_tokens, stop=("\nObservation:",), temperature=1.0, seed=seed)
    answers = (
        backend.chat([request], **gen) if isinstance(request, list) else backend.complete([request], **gen)
    )
    return [a.text if a.ok else "" for a in answers]
