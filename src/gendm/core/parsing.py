"""Read a label, a pairwise choice or an action out of free text (no language model involved).

Answers come in many shapes ("positive", ``{"label": "positive"}``, "The sentiment is Positive.",
"Answer: B", "[[A]]"). Each parser reads, in order: JSON (an object with the expected key, or a
bare JSON string), an explicit ``answer: X`` line, then a whole-word mention in free text. A text
that names two different valid values is ambiguous and is *not* guessed.

A parser never raises on bad input and never falls back to a default value: it returns
:data:`UNKNOWN`. The text environments read their free-text actions with :class:`ActionParser`;
``gendm.lm.parsing`` adds asking a language model again when its answer cannot be read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final, Protocol

from gendm.core.errors import ConfigError


class _Unknown:
    """The type of :data:`UNKNOWN`; a singleton that is falsy and prints as ``UNKNOWN``."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:  # pickles (e.g. to a worker process) as the same singleton
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()
"""What a parser returns when the answer cannot be read. Compare with ``is``."""


class Parser(Protocol):
    format_hint: str
    """One sentence telling the model the expected answer format, used in the retry prompt."""

    def __call__(self, text: str) -> Any:
        """The parsed value, or :data:`UNKNOWN`."""
        ...


def _json_values(text: str, keys: Sequence[str]) -> list[str]:
    """String values under ``keys`` of every JSON object in ``text``, and bare JSON strings."""
    found: list[str] = []
    stripped = text.strip()
    if stripped.startswith('"'):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = None
        if isinstance(value, str):
            found.append(value)
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            lowered = {str(k).lower(): v for k, v in obj.items()}
            found += [str(lowered[k]) for k in keys if isinstance(lowered.get(k), str | int | float)]
    return found


def _mentions(text: str, options: Sequence[str]) -> list[str]:
    """Options mentioned as whole words, longest first so that "very good" is not also "good"."""
    remaining, hits = text, []
    for opt in sorted(options, key=len, reverse=True):
        pattern = re.compile(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", re.IGNORECASE)
        if pattern.search(remaining):
            hits.append(opt)
            remaining = pattern.sub(" ", remaining)
    return hits


class LabelParser:
    """One label from a fixed set (case-insensitive; returned as spelled in ``labels``)."""

    kind = "label"

    def __init__(self, labels: Sequence[str], key: str = "label") -> None:
        labels = [str(x) for x in labels]
        if not labels or any(not x.strip() for x in labels):
            raise ConfigError(f"{type(self).__name__} needs non-empty {self.kind}s, got {labels!r}.")
        if len({x.lower() for x in labels}) != len(labels):
            raise ConfigError(
                f"{type(self).__name__}: {self.kind}s must differ ignoring case, got {labels!r}."
            )
        self.labels = labels
        self._by_lower = {x.lower(): x for x in labels}
        self.keys = (key, "label", "answer", "choice", "action", "output")
        shown = ", ".join(labels)
        self.format_hint = (
            f"Answer with exactly one {self.kind} from: {shown}. Reply with only the {self.kind}, "
            f'or as JSON: {{"{key}": "<{self.kind}>"}}.'
        )

    def _exact(self, value: str) -> str | None:
        return self._by_lower.get(value.strip().strip(".!\"'`*").strip().lower())

    def __call__(self, text: str) -> Any:
        if not isinstance(text, str) or not text.strip():
            return UNKNOWN
        for value in _json_values(text, self.keys):  # 1. JSON
            if (hit := self._exact(value)) is not None:
                return hit
        if (hit := self._exact(text)) is not None:  # 2. the whole answer is a label
            return hit
        keyword = "|".join(re.escape(k) for k in dict.fromkeys(self.keys))
        for m in re.finditer(
            rf"\b(?:{keyword})\s*(?:is)?\s*[:=]\s*(.+)", text, re.IGNORECASE
        ):  # 3. "answer: X"
            hits = _mentions(m.group(1).splitlines()[0], self.labels)
            if len(hits) == 1:
                return hits[0]
        hits = _mentions(text, self.labels)  # 4. exactly one label named anywhere
        return hits[0] if len(hits) == 1 else UNKNOWN


class ActionParser(LabelParser):
    """One action from a list of valid actions (e.g. ``["go north", "pick up key"]``)."""

    kind = "action"

    def __init__(self, actions: Sequence[str], key: str = "action") -> None:
        super().__init__(actions, key=key)


class ChoiceParser:
    """A pairwise preference: ``"A"``, ``"B"`` or ``"tie"``.

    Reads JSON (``{"choice": "A"}``), MT-Bench's ``[[A]]``, a bare ``A``/``(B)``, "Answer: B",
    and "Response A is better"; tie words are tie, draw, equal, equally, same. An answer that
    names both A and B without a verdict is ambiguous and gives :data:`UNKNOWN`.
    """

    format_hint = (
        "Answer with exactly one of: A (the first is better), B (the second is better), tie. Reply with only "
        'A, B or tie, or as JSON: {"choice": "A"}.'
    )
    _TIE = r"(?:tie|draw|equal|equally|same)"
    _NAMES = r"(?:response|output|answer|option|assistant|candidate|summary|completion)"

    def _norm(self, value: str) -> str | None:
        v = value.strip().strip("()[]. !\"'`*").lower()
        if v in ("a", "b"):
            return v.upper()
        return "tie" if re.fullmatch(self._TIE, v) else None

    def __call__(self, text: str) -> Any:
        if not isinstance(text, str) or not text.strip():
            return UNKNOWN
        for value in _json_values(text, ("choice", "answer", "winner", "preference", "label", "verdict")):
            if (hit := self._norm(value)) is not None:
                return hit
        if (hit := self._norm(text)) is not None:
            return hit
        if m := re.search(r"\[\[\s*(A|B|tie|C)\s*\]\]", text, re.IGNORECASE):  # MT-Bench; [[C]] is its tie
            v = m.group(1).lower()
            return "tie" if v in ("tie", "c") else v.upper()
        verdict = re.search(
            rf"\b(?:answer|choice|verdict|winner|prefer(?:red|ence)?|better(?: one)?)\s*(?:is)?\s*[:=]?\s*"
            rf"(?:{self._NAMES}\s+)?\(?(A|B|{self._TIE})\)?(?![\w-])",
            text,
            re.IGNORECASE,
        )
        if verdict and (hit := self._norm(verdict.group(1))) is not None:
            return hit
        named = {
            m.group(1).upper() for m in re.finditer(rf"\b{self._NAMES}\s+\(?([AB])\)?\b", text, re.IGNORECASE)
        }
        if len(named) == 1:
            return named.pop()
        if not named and re.search(rf"\b{self._TIE}\b", text, re.IGNORECASE):
            return "tie"
        return UNKNOWN


__all__ = ["UNKNOWN", "ActionParser", "ChoiceParser", "LabelParser", "Parser"]
