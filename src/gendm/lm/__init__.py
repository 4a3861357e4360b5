"""Language models for gendm: backends behind one protocol, a persistent response cache, parsing.

``import gendm.lm`` needs no optional dependency; ``HFBackend`` and ``SentenceEmbedder`` import
``transformers`` (the ``lm`` extra) when first used.
"""

from __future__ import annotations

from typing import Any

from gendm.core.errors import ConfigError
from gendm.lm.base import (
    BackendUnavailableError,
    Completion,
    GenerationSettings,
    LanguageModel,
    LMError,
    Message,
    ModelLoadError,
    NotSupportedError,
)
from gendm.lm.cache import CacheCorruptedWarning, CachedBackend, ResponseCache
from gendm.lm.guard import BackendFailingError, BackendOptions, FailureGuard
from gendm.lm.openai import OpenAICompatibleBackend
from gendm.lm.parsing import (
    UNKNOWN,
    ActionParser,
    ChoiceParser,
    LabelParser,
    ParseResult,
    parse_many_with_retry,
    parse_with_retry,
)

__all__ = [
    "UNKNOWN",
    "ActionParser",
    "BackendFailingError",
    "BackendOptions",
    "BackendUnavailableError",
    "CacheCorruptedWarning",
    "CachedBackend",
    "ChoiceParser",
    "Completion",
    "FailureGuard",
    "GenerationSettings",
    "HFBackend",
    "LMError",
    "LabelParser",
    "LanguageModel",
    "Message",
    "ModelLoadError",
    "NotSupportedError",
    "OpenAICompatibleBackend",
    "ParseResult",
    "ResponseCache",
    "SentenceEmbedder",
    "make_backend",
    "parse_many_with_retry",
    "parse_with_retry",
]

BACKEND_FORMS = (
    "hf:/path/to/model-dir        (a directory written by save_pretrained; or hf:name in the local HF cache)",
    "openai:http://host:port/v1#model-name   (any OpenAI-compatible server; the model after '#')",
)


def __getattr__(name: str) -> Any:  # lazy: transformers is imported only when these are used
    if name in ("HFBackend", "SentenceEmbedder"):
        from gendm.lm import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'gendm.lm' has no attribute {name!r}")


def make_backend(spec: str, **kwargs: Any) -> LanguageModel:
    """Build a backend from a one-string spec; ``kwargs`` go to the backend's constructor.

    Forms: ``hf:/path/to/dir`` and ``openai:http://host:port/v1#model-name``.
    """
    kind, sep, rest = spec.partition(":")
    if sep and rest:
        if kind == "hf":
            from gendm.lm.hf import HFBackend

            return HFBackend(rest, **kwargs)
        if kind == "openai":
            url, hash_, model = rest.partition("#")
            if hash_ and url and model:
                return OpenAICompatibleBackend(url, model, **kwargs)
    forms = "\n  ".join(BACKEND_FORMS)
    raise ConfigError(f"Bad language-model backend spec {spec!r}. Valid forms:\n  {forms}")
