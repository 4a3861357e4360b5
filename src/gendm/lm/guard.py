"""How a run talks to its language model: client limits, and a guard that ends a run whose backend fails.

A backend turns a request that failed after its retries into an error :class:`Completion` (see
:mod:`gendm.lm.base`), so one bad answer never kills a long run. But a server that answers with
HTTP 500 or garbage on *every* request would then let an agent play to the end on fallback actions
and report "success 0.00" as if the model had tried. :class:`FailureGuard` wraps a backend, counts
its answers and raises :class:`BackendFailingError` (an :class:`LMError`, so the CLI prints
``gendm: error:`` and exits nonzero) with the server's last error once

    failed answers / answers > max_failure_rate   after at least failure_min_calls answers.

The defaults (more than half, after 3) end a run whose server is broken within a few calls and
keep a run whose server fails now and then; one that accepts connections and never answers is
given up after ``failure_min_calls * deadline_s`` (3 minutes by default). A cached answer counts as
a good one; a ``logprobs`` or ``embed`` call that raised counts as failed (its error propagates).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from gendm.core.config import Config, field
from gendm.lm.base import Completion, LanguageModel, LMError, Message

CLIENT_FIELDS = ("timeout_s", "max_retries", "deadline_s")
"""The fields of :class:`BackendOptions` that configure an ``openai:`` client (an ``hf:`` model runs
in-process and has none)."""


class BackendFailingError(LMError):
    """Most of a run's language-model calls failed: the server answers, but not usefully."""


@dataclass(frozen=True)
class BackendOptions(Config):
    """Limits of one run's language-model backend (``gendm agent`` flags, a bench method's
    ``backend_options`` table)."""

    timeout_s: float = field(30.0, gt=0)
    """openai: socket timeout of one attempt (connecting, and each wait for data)."""
    max_retries: int = field(3, ge=0)
    """openai: retries of a request after a connection error, timeout, HTTP 429 / 5xx or bad JSON."""
    deadline_s: float = field(60.0, gt=0)
    """openai: total time of one request across its attempts and backoff waits."""
    max_failure_rate: float = field(0.5, ge=0, lt=1)
    """The run fails once more than this fraction of its model calls failed (after failure_min_calls;
    0: any failure ends the run)."""
    failure_min_calls: int = field(3, ge=1)
    """Model calls made before max_failure_rate is checked."""

    def client_kwargs(self, backend_spec: str) -> dict[str, Any]:
        """Constructor keywords of the backend named by ``backend_spec`` (``make_backend`` form)."""
        if backend_spec.startswith("openai:"):
            return {name: getattr(self, name) for name in CLIENT_FIELDS}
        return {}

    def non_default_client_fields(self) -> list[str]:
        """The client fields set to other values than their defaults (an ``hf:`` backend refuses them)."""
        defaults = BackendOptions()
        return [f for f in CLIENT_FIELDS if getattr(self, f) != getattr(defaults, f)]


class FailureGuard:
    """A :class:`LanguageModel` in front of ``backend`` that raises :class:`BackendFailingError` once
    too many of its answers failed (module docstring). Other attributes (a cache's ``hits``) are the
    wrapped backend's."""

    def __init__(
        self, backend: LanguageModel, max_failure_rate: float = 0.5, failure_min_calls: int = 3
    ) -> None:
        BackendOptions(max_failure_rate=max_failure_rate, failure_min_calls=failure_min_calls)  # validates
        self.backend = backend
        self.max_failure_rate, self.failure_min_calls = max_failure_rate, failure_min_calls
        self.calls = 0
        self.failures = 0
        self.last_error = ""
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, backend: LanguageModel, options: BackendOptions) -> FailureGuard:
        return cls(backend, options.max_failure_rate, options.failure_min_calls)

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def settings(self) -> Any:
        return self.backend.settings

    def __getattr__(self, name: str) -> Any:  # only called for names FailureGuard lacks
        # "backend" is missing only before __init__ ran; the wrapped backend's streaming methods would
        # bypass the count (a cache in front of the guard then calls complete / chat instead)
        if name in ("backend", "iter_complete", "iter_chat"):
            raise AttributeError(name)
        return getattr(self.backend, name)

    def complete(self, prompts: list[str], **gen: Any) -> list[Completion]:
        return self._count(self.backend.complete(prompts, **gen))

    def chat(self, conversations: list[list[Message]], **gen: Any) -> list[Completion]:
        return self._count(self.backend.chat(conversations, **gen))

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        return self._guarded(self.backend.logprobs, prompts, continuations)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._guarded(self.backend.embed, texts)

    def _guarded(self, fn: Any, *args: Any) -> Any:
        try:
            out = fn(*args)
        except LMError as e:
            self._record(1, [str(e)])
            raise
        self._record(1, [])
        return out

    def _count(self, answers: list[Completion]) -> list[Completion]:
        self._record(len(answers), [c.error or "" for c in answers if not c.ok])
        self.check()
        return answers

    def _record(self, calls: int, errors: list[str]) -> None:
        with self._lock:
            self.calls += calls
            self.failures += len(errors)
            if errors:
                self.last_error = errors[-1]

    def check(self) -> None:
        """Raise :class:`BackendFailingError` if the failure threshold is passed."""
        with self._lock:
            calls, failures, last = self.calls, self.failures, self.last_error
        if calls >= self.failure_min_calls and failures > self.max_failure_rate * calls:
            raise BackendFailingError(
                f"The language model {self.model_id} failed {failures} of its {calls} calls, more than "
                f"max_failure_rate={self.max_failure_rate:g} allows; stopping the run instead of playing "
                f"on fallback actions. Last error: {last}. Check the server (its log, the model name "
                "after '#'); if it is only slow, raise timeout_s / max_retries / deadline_s (`gendm agent "
                "--timeout-s ...`, a bench method's backend_options)."
            )
