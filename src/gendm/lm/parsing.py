"""Turn a language model's free-form answer into a label, a pairwise choice or an action.

The parsers themselves (:class:`LabelParser`, :class:`ActionParser`, :class:`ChoiceParser`,
:data:`UNKNOWN`) read text and need no model, so they live in :mod:`gendm.core.parsing`, where the
text environments use them too; they are re-exported here as part of the language-model API. A
parser never raises on bad model output and never falls back to a default value: it returns
:data:`UNKNOWN`. :func:`parse_with_retry` asks once more with the format restated, then gives up
with :data:`UNKNOWN` and the reason, so a reward or an evaluation can count unreadable answers
instead of silently scoring them as some label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gendm.core.parsing import UNKNOWN, ActionParser, ChoiceParser, LabelParser, Parser
from gendm.lm.base import Completion, LanguageModel, Message


@dataclass
class ParseResult:
    """The parsed value (or :data:`UNKNOWN`), every raw answer read, and why it failed if it did."""

    value: Any
    raw: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.value is not UNKNOWN

    @property
    def attempts(self) -> int:
        return len(self.raw)


def parse_with_retry(
    backend: LanguageModel,
    prompt: str | list[Message],
    parser: Parser,
    retries: int = 1,
    **gen: Any,
) -> ParseResult:
    """Ask, parse; if unreadable, ask again with the format restated (``retries`` times); else UNKNOWN.

    ``prompt`` is a text prompt (``complete``) or a conversation (``chat``). The retry continues the
    exchange: the model sees its previous answer followed by the format hint.
    """
    return parse_many_with_retry(backend, [prompt], parser, retries=retries, **gen)[0]


def parse_many_with_retry(
    backend: LanguageModel,
    prompts: Sequence[str | list[Message]],
    parser: Parser,
    retries: int = 1,
    **gen: Any,
) -> list[ParseResult]:
    """Batched :func:`parse_with_retry`: one backend call per round, only unreadable items retried."""
    results = [ParseResult(UNKNOWN) for _ in prompts]
    current: list[str | list[Message]] = list(prompts)
    todo = list(range(len(prompts)))
    for attempt in range(retries + 1):
        if not todo:
            break
        answers = _ask(backend, [current[i] for i in todo], gen)
        still: list[int] = []
        for i, ans in zip(todo, answers):
            r = results[i]
            if not ans.ok:  # the backend already retried the request: asking again would not help
                r.reason = f"backend error: {ans.error}"
                continue
            r.raw.append(ans.text)
            value = parser(ans.text)
            if value is not UNKNOWN:
                r.value, r.reason = value, None
                continue
            r.reason = f"unreadable answer after {attempt + 1} attempt(s): {ans.text[:200]!r}"
            current[i] = _restate(current[i], ans.text, parser.format_hint)
            still.append(i)
        todo = still
    return results


def _ask(backend: LanguageModel, items: list[str | list[Message]], gen: dict[str, Any]) -> list[Completion]:
    """Send text prompts through ``complete`` and conversations through ``chat``, keeping order."""
    out: list[Completion | None] = [None] * len(items)
    for is_chat, call in ((False, backend.complete), (True, backend.chat)):
        idx = [i for i, it in enumerate(items) if isinstance(it, list) == is_chat]
        if idx:
            for i, c in zip(idx, call([items[i] for i in idx], **gen)):
                out[i] = c
    return out  # type: ignore[return-value]


def _restate(prompt: str | list[Message], answer: str, hint: str) -> str | list[Message]:
    if isinstance(prompt, list):
        return [
            *prompt,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": f"I could not read that answer. {hint}"},
        ]
    return f"{prompt}{answer}\n\nThat answer could not be read. {hint}\nAnswer:"


__all__ = [
    "UNKNOWN",
    "ActionParser",
    "ChoiceParser",
    "LabelParser",
    "ParseResult",
    "Parser",
    "parse_many_with_retry",
    "parse_with_retry",
]
