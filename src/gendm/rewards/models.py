"""Reward models fit from language-model annotations of captions.

Three variants, one contract (``fit(...)``, then ``model(captions) -> np.ndarray`` of rewards):

- :class:`LookupReward` — the annotations themselves: caption -> reward of its label, 0 for captions
  never annotated. Exact, but says nothing about a caption the model has not judged.
- :class:`EmbeddingClassifier` — logistic regression on sentence embeddings, so a paraphrase or an
  unseen combination of colour and object ("you picked up the purple key") gets a reward close to
  the annotated ones. The reward is p(positive | caption).
- :class:`BradleyTerry` — Motif's (Klissarov et al., 2023) reward from pairwise preferences:
  p(a preferred to b) = sigmoid(r(a) - r(b)), fit by maximum likelihood (ties count one half each
  way). Tabular (one score per caption) or, given an embedder, linear in the sentence embedding.

Embedders are anything with ``embed(list[str]) -> (n, d) array`` (``SentenceEmbedder``, any
``gendm.lm`` backend); each distinct caption is embedded once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from gendm.core.errors import ConfigError
from gendm.lm.parsing import UNKNOWN


class Embedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


class _EmbeddingMemo:
    """Embeds each distinct text once (captions repeat constantly)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._memo: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if new:
            for t, v in zip(new, np.asarray(self.embedder.embed(new), dtype=np.float32)):
                self._memo[t] = v
        return torch.from_numpy(np.stack([self._memo[t] for t in texts])) if texts else torch.zeros(0, 0)


class LookupReward:
    """Caption -> reward of its annotated label; ``default`` for captions without a readable label."""

    def __init__(self, label_rewards: Mapping[str, float] | None = None, default: float = 0.0) -> None:
        self.label_rewards = dict(label_rewards or {"yes": 1.0})
        self.default = default
        self.table: dict[str, float] = {}

    def fit(self, labels: Mapping[str, Any]) -> LookupReward:
        """``labels``: caption -> label (UNKNOWN and unlisted labels pay ``default``)."""
        self.table = {
            c: self.label_rewards.get(v, self.default) for c, v in labels.items() if v is not UNKNOWN
        }
        return self

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        return np.array([self.table.get(c, self.default) for c in captions], dtype=np.float32)


class EmbeddingClassifier:
    """Logistic regression p(positive | caption) on frozen sentence embeddings, trained with L-BFGS.

    ``l2`` is the weight penalty; with a few dozen annotated captions and 384 dimensions it is what
    keeps the classifier from memorising the exact wording.
    """

    def __init__(self, embedder: Embedder, l2: float = 1e-2, steps: int = 100) -> None:
        self.embed = _EmbeddingMemo(embedder)
        self.l2, self.steps = l2, steps
        self.linear: torch.nn.Linear | None = None

    def fit(self, captions: Sequence[str], positive: Sequence[bool]) -> EmbeddingClassifier:
        if len(captions) != len(positive) or not captions:
            raise ConfigError("EmbeddingClassifier.fit needs one label per caption and at least one caption.")
        x = self.embed(list(captions))
        y = torch.as_tensor(np.asarray(positive, dtype=np.float32))
        lin = torch.nn.Linear(x.shape[1], 1)
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=self.steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits = lin(x).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            loss = loss + self.l2 * lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.linear = lin
        return self

    @torch.no_grad()
    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        if self.linear is None:
            raise ConfigError("EmbeddingClassifier: call fit() before asking for rewards.")
        if not captions:
            return np.zeros(0, dtype=np.float32)
        return torch.sigmoid(self.linear(self.embed(list(captions))).squeeze(-1)).numpy()


class BradleyTerry:
    """Scores r(caption) with p(a > b) = sigmoid(r(a) - r(b)), fit to preferences by maximum likelihood.

    Without ``embedder`` the model is tabular (one free score per caption seen in the preferences,
    0 for any other); with one, r is linear in the caption's embedding and so generalises. ``l2``
    anchors the scores (the likelihood only fixes differences). Scores are centred to mean 0 over
    the fitted captions, so a Motif-style reward is positive exactly for better-than-average events.
    """

    def __init__(self, embedder: Embedder | None = None, l2: float = 1e-3, steps: int = 200) -> None:
        self.embed = _EmbeddingMemo(embedder) if embedder is not None else None
        self.l2, self.steps = l2, steps
        self.index: dict[str, int] = {}
        self.params: torch.nn.Module | None = None
        self.offset = 0.0

    def fit(self, preferences: Iterable[tuple[str, str, str]]) -> BradleyTerry:
        """``preferences``: ``(a, b, "A" | "B" | "tie")`` triples."""
        prefs = [(a, b, w) for a, b, w in preferences if w in ("A", "B", "tie")]
        if not prefs:
            raise ConfigError("BradleyTerry.fit needs at least one readable preference ('A', 'B' or 'tie').")
        items = list(dict.fromkeys(c for a, b, _ in prefs for c in (a, b)))
        self.index = {c: i for i, c in enumerate(items)}
        ia = torch.tensor([self.index[a] for a, _, _ in prefs])
        ib = torch.tensor([self.index[b] for _, b, _ in prefs])
        target = torch.tensor([{"A": 1.0, "B": 0.0, "tie": 0.5}[w] for *_, w in prefs])
        if self.embed is None:
            self.params = torch.nn.Embedding(len(items), 1)
            torch.nn.init.zeros_(self.params.weight)
            feats = torch.arange(len(items))
        else:
            feats = self.embed(items)
            self.params = torch.nn.Linear(feats.shape[1], 1, bias=False)
            torch.nn.init.zeros_(self.params.weight)
        params = self.params
        opt = torch.optim.LBFGS(params.parameters(), max_iter=self.steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            r = params(feats).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(r[ia] - r[ib], target)
            loss = loss + self.l2 * sum(p.pow(2).sum() for p in params.parameters())
            loss.backward()
            return loss

        opt.step(closure)
        self.offset = 0.0
        self.offset = float(self._raw(items).mean())
        return self

    @torch.no_grad()
    def _raw(self, captions: Sequence[str]) -> torch.Tensor:
        if self.params is None:
            raise ConfigError("BradleyTerry: call fit() before asking for rewards.")
        if self.embed is not None:
            return self.params(self.embed(list(captions))).squeeze(-1)
        out = torch.full((len(captions),), self.offset)  # unseen captions: 0 after centring
        known = [(i, self.index[c]) for i, c in enumerate(captions) if c in self.index]
        if known:
            rows, idx = zip(*known)
            out[list(rows)] = self.params(torch.tensor(idx)).squeeze(-1)
        return out

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        if not captions:
            return np.zeros(0, dtype=np.float32)
        return (self._raw(captions) - self.offset).numpy().astype(np.float32)
