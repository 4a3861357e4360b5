"""A persistent response cache in front of any backend, in one SQLite file.

Why: language-model calls dominate the cost of LM-scored rewards and evaluations, and a benchmark
rerun (or a resumed crashed run) asks the same questions again. The cache answers those from disk.

- Key: SHA-256 of the canonical JSON (sorted keys, no whitespace) of ``(model_id, method, input,
  generation settings)``; the full request JSON is stored beside the answer for inspection. The
  settings are the backend's defaults merged with the call's overrides, so two spellings of the same
  request share an entry, and a different ``model_id`` (HFBackend includes a fingerprint of the
  weights) never does.
- Policy — deterministic answers only: ``complete`` and ``chat`` are cached when the request is
  greedy (``temperature == 0``) or carries a ``seed``; sampled, unseeded requests always go to the
  backend (caching them would turn N samples of one prompt into N copies of one sample).
  ``logprobs`` and ``embed`` are functions of the model and always cached. Failed completions
  (``error`` set) are never cached, so a rerun retries them.
- Durability: each answer is committed as it arrives (backends that offer ``iter_complete`` /
  ``iter_chat`` stream answers one by one; others are called in chunks of ``chunk_size``), so a
  crash loses at most the answers still in flight. SQLite runs in WAL mode, which survives a killed
  process (not necessarily a power cut).
- A file that is not a readable cache (corrupt, truncated, something else) is moved aside to
  ``<name>.corrupt-<time>`` with a :class:`CacheCorruptedWarning`, and a fresh cache is built.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gendm.lm.base import Completion, LanguageModel, Message, check_pairs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    method TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class CacheCorruptedWarning(RuntimeWarning):
    """The cache file was unreadable; it was moved aside and an empty cache started."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class ResponseCache:
    """The SQLite store: ``get(request) -> answer | None`` and ``put(request, answer)``; thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as e:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            warnings.warn(
                f"Language-model cache {self.path} is unreadable ({e}); moved it to {aside} and started an "
                "empty cache. Answers will be recomputed.",
                CacheCorruptedWarning,
                stacklevel=3,
            )
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):  # the journal of a broken file belongs to it
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    side.rename(aside.with_name(aside.name + suffix))
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb") as f:  # SQLite may read a stale -wal instead of noticing garbage
                if f.read(16) != b"SQLite format 3\x00":
                    raise sqlite3.DatabaseError("not an SQLite file (bad header)")
        conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            row = conn.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {row}")
            conn.execute("SELECT count(*) FROM responses").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        return hashlib.sha256(canonical_json(request).encode()).hexdigest()

    def get(self, request: dict[str, Any]) -> Any | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT response FROM responses WHERE key = ?", (self.key(request),)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, request: dict[str, Any], response: Any) -> None:
        with self._lock, self._conn:  # one transaction per answer: committed before the next arrives
            self._conn.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self.key(request),
                    request["model"],
                    request["method"],
                    canonical_json(request),
                    json.dumps(response),
                    time.time(),
                ),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class CachedBackend:
    """A :class:`~gendm.lm.base.LanguageModel` that answers from a :class:`ResponseCache` first.

    ``hits`` and ``misses`` count cacheable items (uncacheable sampled requests count as neither);
    ``stats()`` returns them with the number of stored answers.
    """

    def __init__(self, backend: LanguageModel, path: str | Path, chunk_size: int = 8) -> None:
        self.backend = backend
        self.cache = ResponseCache(path)
        self.chunk_size = chunk_size
        self.hits = 0
        self.misses = 0

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def settings(self) -> Any:
        return self.backend.settings

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self.cache)}

    def close(self) -> None:
        self.cache.close()

    def __enter__(self) -> CachedBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, item: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"model": self.backend.model_id, "method": method, "input": item, "params": params or {}}

    # -- text ---------------------------------------------------------------------------------------
    def complete(self, prompts: list[str], **gen: Any) -> list[Completion]:
        return self._generate("complete", prompts, gen)

    def chat(self, conversations: list[list[Message]], **gen: Any) -> list[Completion]:
        return self._generate("chat", conversations, gen)

    def _generate(self, method: str, items: list[Any], gen: dict[str, Any]) -> list[Completion]:
        settings = self.backend.settings.replace(**gen)
        call = getattr(self.backend, method)
        if not settings.deterministic:
            return call(items, **gen)
        requests = [self._request(method, item, settings.to_dict()) for item in items]
        out: list[Completion | None] = []
        todo: list[int] = []
        for i, req in enumerate(requests):
            hit = self.cache.get(req)
            if hit is None:
                todo.append(i)
                out.append(None)
            else:
                out.append(Completion(hit["text"], hit["finish_reason"], meta={"cached": True}))
        self.hits += len(items) - len(todo)
        self.misses += len(todo)
        for j, c in self._stream(method, [items[i] for i in todo], gen):
            i = todo[j]
            out[i] = c
            if c.ok:
                self.cache.put(requests[i], {"text": c.text, "finish_reason": c.finish_reason})
        return out  # type: ignore[return-value]

    def _stream(self, method: str, items: list[Any], gen: dict[str, Any]) -> Iterator[tuple[int, Completion]]:
        """Answers as they arrive: the backend's own iterator if it has one, else chunk by chunk."""
        if not items:
            return
        streaming = getattr(self.backend, f"iter_{method}", None)
        if streaming is not None:
            yield from streaming(items, **gen)
            return
        call = getattr(self.backend, method)
        for start in range(0, len(items), self.chunk_size):
            for j, c in enumerate(call(items[start : start + self.chunk_size], **gen)):
                yield start + j, c

    # -- scores and vectors -------------------------------------------------------------------------
    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        check_pairs(prompts, continuations)
        requests = [self._request("logprobs", [p, c]) for p, c in zip(prompts, continuations)]
        return self._lookup(
            requests,
            lambda idx: self.backend.logprobs([prompts[i] for i in idx], [continuations[i] for i in idx]),
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        requests = [self._request("embed", t) for t in texts]
        vecs = self._lookup(
            requests, lambda idx: [v.tolist() for v in self.backend.embed([texts[i] for i in idx])]
        )
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), -1) if texts else self.backend.embed([])

    def _lookup(self, requests: list[dict[str, Any]], compute: Callable[[list[int]], list[Any]]) -> list[Any]:
        out = [self.cache.get(r) for r in requests]
        todo = [i for i, v in enumerate(out) if v is None]
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        for start in range(0, len(todo), self.chunk_size):  # commit chunk by chunk
            idx = todo[start : start + self.chunk_size]
            for i, value in zip(idx, compute(idx)):
                out[i] = value
                self.cache.put(requests[i], value)
        return out
