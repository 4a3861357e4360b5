"""The language-model contract: one protocol, its result type and its generation settings.

Every backend (a local Hugging Face model, an OpenAI-compatible server, a cache in front of either)
speaks the same four methods, so a scorer, a reward or an agent that asks a language model never
knows which one it got. Calls are batched (a list in, a list out, same order) because every backend
is much faster on a batch than on a loop of single calls.

A text answer that failed after the backend's own retries is not an exception: it comes back as a
:class:`Completion` whose ``error`` says what went wrong, so that a long run keeps the other answers
and reports the failures instead of dying on one bad request.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gendm.core.config import Config, check, field
from gendm.core.errors import ConfigError, GendmError

Message = dict[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


class LMError(GendmError):
    """A language-model backend could not load or could not answer."""


class ModelLoadError(LMError):
    """A model directory or model name cannot be loaded (missing files, wrong format)."""


class BackendUnavailableError(LMError, ConnectionError):
    """A remote backend could not be reached at all (nothing listening, DNS failure)."""


class NotSupportedError(LMError, NotImplementedError):
    """The backend cannot do this operation (e.g. a server without prompt log-probabilities)."""


@dataclass(frozen=True)
class GenerationSettings(Config):
    """How to generate. Defaults are greedy, which is also what makes an answer cacheable."""

    max_new_tokens: int = field(64, ge=1)
    """Upper bound on generated tokens per answer."""
    temperature: float = field(0.0, ge=0)
    """0 means greedy decoding; > 0 samples from the softmax at this temperature."""
    top_p: float = field(1.0, gt=0, le=1)
    """Nucleus sampling mass in (0, 1]; ignored when greedy."""
    stop: tuple[str, ...] = ()
    """Strings that end an answer; the answer is cut before the first one found."""
    seed: int | None = None
    """Seed for sampling, so that a sampled answer can be reproduced (and cached)."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # a lone string is a common slip: treat it as one stop string
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        super().__post_init__()
        check(math.isfinite(self.temperature), "temperature", f"must be finite, got {self.temperature!r}.")
        check(
            all(isinstance(s, str) and s for s in self.stop),
            "stop",
            f"must hold non-empty strings, got {self.stop!r}.",
        )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def deterministic(self) -> bool:
        """Greedy, or sampled with a fixed seed: the same request should give the same answer."""
        return self.greedy or self.seed is not None

    def replace(self, **gen: Any) -> GenerationSettings:
        """These settings with per-call overrides; an unknown keyword is an error, never ignored."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(gen) - names)
        if unknown:
            raise ConfigError(
                f"Unknown generation setting(s) {', '.join(unknown)}. Valid: {', '.join(sorted(names))}."
            )
        return dataclasses.replace(self, **gen) if gen else self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (stop as a list), used for cache keys and request payloads."""
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class Completion:
    """One generated answer.

    ``finish_reason`` is ``"stop"`` (end-of-sequence or a stop string), ``"length"`` (hit
    ``max_new_tokens``) or ``"error"``; in the last case ``text`` is empty and ``error`` says why.
    """

    text: str
    finish_reason: str = "stop"
    error: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Backend extras (e.g. ``{"cached": True}``, token counts); never needed to use the answer."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, error: str) -> Completion:
        return cls(text="", finish_reason="error", error=error)


@runtime_checkable
class LanguageModel(Protocol):
    """What every backend offers. ``model_id`` names the model exactly enough to key a cache."""

    model_id: str
    settings: GenerationSettings

    def complete(self, prompts: list[str], **gen: Any) -> list[Completion]:
        """Continue each prompt; ``gen`` overrides fields of :class:`GenerationSettings`."""
        ...

    def chat(self, conversations: list[list[Message]], **gen: Any) -> list[Completion]:
        """Answer each conversation as the assistant."""
        ...

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        """Sum of log p(continuation tokens | prompt) per pair; :class:`NotSupportedError` if impossible."""
        ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """One vector per text, shape ``(len(texts), dim)``, float32."""
        ...


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; say whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def check_pairs(prompts: list[str], continuations: list[str]) -> None:
    """Log-probability calls take two equally long lists; say so instead of zipping silently."""
    if len(prompts) != len(continuations):
        raise ConfigError(
            f"logprobs needs one continuation per prompt: got {len(prompts)} prompts and "
            f"{len(continuations)} continuations."
        )


def check_conversation(conversation: list[Message], where: str) -> None:
    """A conversation is a list of {"role", "content"} dicts; name the bad message otherwise."""
    if not isinstance(conversation, list) or not conversation:
        raise ConfigError(f"{where}: a conversation must be a non-empty list of messages.")
    for j, msg in enumerate(conversation):
        if (
            not isinstance(msg, dict)
            or not isinstance(msg.get("role"), str)
            or not isinstance(msg.get("content"), str)
        ):
            raise ConfigError(f"{where}, message {j}: expected {{'role': str, 'content': str}}, got {msg!r}.")
