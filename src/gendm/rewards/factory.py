"""Intrinsic rewards from a one-line spec, for ``gendm train --intrinsic`` and the bench spec's
``intrinsic`` key.

    rnd                                   random network distillation
    ellm,threshold=0.4                    ELLM-style: caption-to-mission embedding similarity
    lm                                    LM feedback, answered by the embedding judge (no LLM)
    lm,backend=openai:http://localhost:8000/v1#qwen,cache=runs/lm.sqlite,chat=true
    lm,backend=hf:/path/to/model-dir

Fields (``KIND,key=value,...`` on the command line, a TOML table in a spec):

- ``kind``: ``rnd`` | ``ellm`` | ``lm``;
- ``coef``: weight of the intrinsic reward (default 0.005 for rnd, which pays every step; 0.1 for the
  caption rewards, which pay per rewarded event);
- ``beta`` (0.5) and ``episodic`` (true): count normalisation of caption rewards;
- ``threshold`` (0.4): cosine threshold of ``ellm`` and of the embedding judge;
- ``backend`` (``embed``), ``cache`` (none), ``batch`` (16), ``chat`` (false): the ``lm`` annotator.

Caption rewards need a captioned env (``gendm/MiniGrid-*-Captioned-v*``, ``gendm.envs.captioned``);
on another env they are refused before training starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np

from gendm.core.config import Config, field
from gendm.core.errors import ConfigError, suggest

KINDS = ("rnd", "ellm", "lm")
DEFAULT_COEF = {"rnd": 0.005, "ellm": 0.1, "lm": 0.1}


@dataclass(frozen=True)
class IntrinsicSettings(Config):
    kind: str = field(choices=KINDS)
    coef: float | None = field(None, ge=0)
    beta: float = 0.5
    episodic: bool = True
    threshold: float = 0.4
    backend: str = "embed"
    cache: str | None = None
    batch: int = field(16, ge=1)
    chat: bool = False

    @property
    def weight(self) -> float:
        return DEFAULT_COEF[self.kind] if self.coef is None else self.coef

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that differ from the defaults (a stable run identity)."""
        defaults = IntrinsicSettings(self.kind)
        return {k: v for k, v in asdict(self).items() if k == "kind" or v != getattr(defaults, k)}


_FIELDS = {f.name: f for f in fields(IntrinsicSettings)}


def _convert(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    if not isinstance(value, str):
        return value
    if "bool" in kind:
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"intrinsic {name} must be true or false, got {value!r}.")
    try:
        if "float" in kind:
            return float(value)
        if "int" in kind:
            return int(value)
    except ValueError:
        raise ConfigError(f"intrinsic {name} must be a number, got {value!r}.") from None
    return value


def parse_intrinsic(spec: str | dict[str, Any] | IntrinsicSettings) -> IntrinsicSettings:
    """``"lm,backend=...,coef=0.2"`` or ``{"kind": "lm", ...}`` -> settings; unknown fields are named."""
    if isinstance(spec, IntrinsicSettings):
        return spec
    if isinstance(spec, str):
        head, *rest = spec.split(",")
        table: dict[str, Any] = {"kind": head.strip()}
        for item in rest:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"intrinsic field {item!r} is not key=value (in {spec!r}).")
            table[key.strip()] = value.strip()
    elif isinstance(spec, dict):
        table = dict(spec)
    else:
        raise ConfigError(f"intrinsic must be a string or a table, got {type(spec).__name__}.")
    if "kind" not in table:
        raise ConfigError(f"intrinsic needs a kind ({', '.join(KINDS)}).")
    for key in table:
        if key not in _FIELDS:
            raise ConfigError(
                f"Unknown intrinsic field {key!r}.{suggest(key, _FIELDS)} Fields: {', '.join(_FIELDS)}."
            )
    return IntrinsicSettings(**{k: _convert(k, v) for k, v in table.items()})


class EmbeddingJudge:
    """A stand-in language model for ``backend=embed``: answers "yes" when the event in the annotator's
    label prompt is within ``threshold`` cosine similarity of the mission, else "no". It lets the whole
    annotator pipeline (queue, batches, parsing, cache) run without an LLM; it reads the default
    :data:`~gendm.rewards.annotator.LABEL_TEMPLATE` only."""

    def __init__(self, threshold: float = 0.4, embedder: Any = None) -> None:
        from gendm.lm import GenerationSettings, SentenceEmbedder

        self.embedder = embedder if embedder is not None else SentenceEmbedder.default()
        self.threshold = threshold
        self.model_id, self.settings = f"embed-judge@{threshold}", GenerationSettings()

    def complete(self, prompts: list[str], **gen: Any) -> list[Any]:
        from gendm.lm import Completion

        pairs = []
        for p in prompts:
            mission, event = re.search(r"mission: (.*)\.\n", p), re.search(r"Event: (.*)\.\n", p)
            if mission is None or event is None:
                raise ConfigError("EmbeddingJudge reads the default label template only.")
            pairs.append((mission.group(1), event.group(1)))
        vecs = self.embedder.embed([t for pair in pairs for t in pair])
        sims = (vecs[0::2] * vecs[1::2]).sum(-1)
        return [Completion("yes" if s >= self.threshold else "no") for s in sims]

    def chat(self, conversations: list, **gen: Any) -> list[Any]:
        return self.complete([c[-1]["content"] for c in conversations], **gen)

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        from gendm.lm import NotSupportedError

        raise NotSupportedError("EmbeddingJudge has no log-probabilities.")

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed(texts)


def make_source(settings: IntrinsicSettings, num_envs: int, obs_dim: int, seed: int = 0) -> Any:
    """The reward source of ``settings`` (see :class:`~gendm.rewards.intrinsic.IntrinsicReward`)."""
    from gendm.rewards.annotator import CaptionAnnotator
    from gendm.rewards.intrinsic import RND, EmbeddingGoalReward, LMFeedbackReward

    s = settings
    if s.kind == "rnd":
        return RND(obs_dim, seed=seed)
    from gendm.lm import SentenceEmbedder

    if s.kind == "ellm":
        return EmbeddingGoalReward(
            SentenceEmbedder.default(), num_envs, s.threshold, beta=s.beta, episodic=s.episodic
        )
    if s.backend == "embed":
        backend: Any = EmbeddingJudge(s.threshold)
    else:
        from gendm.lm import make_backend

        backend = make_backend(s.backend)
    if s.cache:
        from gendm.lm import CachedBackend

        backend = CachedBackend(backend, s.cache)
    annotator = CaptionAnnotator(backend, batch_size=s.batch, chat=s.chat)
    return LMFeedbackReward(annotator, num_envs, beta=s.beta, episodic=s.episodic)


def intrinsic_wrapper(
    settings: IntrinsicSettings, seed: int = 0
) -> Callable[[gym.vector.VectorEnv], gym.vector.VectorEnv]:
    """A function that wraps a training vector env with the intrinsic reward of ``settings``."""
    from gendm.rewards.intrinsic import IntrinsicReward

    def wrap(env: gym.vector.VectorEnv) -> gym.vector.VectorEnv:
        space = env.single_observation_space
        if settings.kind != "rnd":
            _require_captions(env)
        obs_dim = int(np.prod(space.shape)) if space.shape else 0
        return IntrinsicReward(env, make_source(settings, env.num_envs, obs_dim, seed), settings.weight)

    return wrap


def _require_captions(env: gym.vector.VectorEnv) -> None:
    _, info = env.reset(seed=0)
    if "caption" not in info:
        raise ConfigError(
            "Caption rewards (ellm, lm) need an env that reports captions in info['caption'], such as "
            "gendm/MiniGrid-DoorKey-8x8-Captioned-v0 (`gendm.rewards.register_captioned` adds any "
            "MiniGrid id)."
        )
