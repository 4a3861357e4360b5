"""An asynchronous, batched, cached language-model annotator of event captions (ONI / Motif).

Why asynchronous: a language model answers in tens of milliseconds to seconds, an environment steps
in microseconds. As in ONI (Zheng et al., 2024), the environment never waits: :meth:`submit` only
queues a caption, a background thread sends queued captions to the model in batches, and until a
caption's answer has arrived its reward is **0** (:meth:`reward`). Early in training most captions
are therefore unrewarded; because the events of a MiniGrid task are few and repeat constantly, the
table fills within the first few thousand steps.

Two kinds of question, each parsed by :mod:`gendm.lm.parsing` through :func:`parse_many_with_retry`
(one retry with the format restated):

- a **label** per caption (:meth:`submit`): "is this event helpful for the mission? yes/no"; the label
  maps to a reward through ``label_rewards``;
- a **pairwise preference** (:meth:`submit_pair`): "which of two events is more progress? A/B/tie", the
  data a Bradley-Terry reward model is fit to (Motif; :mod:`gendm.rewards.models`).

An answer that cannot be read is :data:`~gendm.lm.parsing.UNKNOWN`: it is stored (so it is not asked
again), pays no reward and is counted in ``stats()["unknown"]``. A backend failure (an exception, or a
failed :class:`~gendm.lm.base.Completion`) is counted in ``stats()["errors"]``, the thread keeps
running, and the item is forgotten so that its next submission asks again.

Every question is asked once per annotator (deduplication + an in-memory answer table); wrap the
backend in :class:`~gendm.lm.cache.CachedBackend` to keep answers across runs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gendm.core.errors import ConfigError
from gendm.lm.base import LanguageModel
from gendm.lm.parsing import UNKNOWN, ChoiceParser, LabelParser, parse_many_with_retry

LABEL_TEMPLATE = (
    "An agent acts in a grid world. Its mission: {mission}.\n"
    "Event: {caption}.\n"
    "Is this event helpful progress toward the mission? Answer yes or no.\nAnswer:"
)
"""Default label question; ``{mission}`` and ``{caption}`` are filled in."""

PAIR_TEMPLATE = (
    "An agent acts in a grid world. Its mission: {mission}.\n"
    "Event A: {a}.\nEvent B: {b}.\n"
    "Which event shows more progress toward the mission? Answer A, B or tie.\nAnswer:"
)
"""Default preference question; ``{mission}``, ``{a}`` and ``{b}`` are filled in."""

_STOP = object()


class CaptionAnnotator:
    """Label captions (and compare pairs of them) with a language model on a background thread.

    ``labels`` are the allowed answers and ``label_rewards`` the reward of each (missing labels pay 0).
    ``batch_size`` captions at most go in one backend call; the thread waits at most ``max_wait_s``
    for a batch to fill. ``chat=True`` asks through ``backend.chat`` (one user message) instead of
    ``complete``. ``gen`` are generation settings for every call (default: 8 new tokens, greedy).
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        backend: LanguageModel,
        *,
        labels: Sequence[str] = ("yes", "no"),
        label_rewards: Mapping[str, float] | None = None,
        template: str = LABEL_TEMPLATE,
        pair_template: str = PAIR_TEMPLATE,
        batch_size: int = 16,
        max_wait_s: float = 0.05,
        retries: int = 1,
        chat: bool = False,
        **gen: Any,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"CaptionAnnotator: batch_size must be >= 1, got {batch_size}.")
        self.backend = backend
        self.label_parser = LabelParser(labels)
        self.choice_parser = ChoiceParser()
        rewards = {labels[0]: 1.0} if label_rewards is None else dict(label_rewards)
        unknown = sorted(set(rewards) - set(self.label_parser.labels))
        if unknown:
            raise ConfigError(
                f"CaptionAnnotator: label_rewards names unknown labels {unknown}; labels: {labels}."
            )
        self.label_rewards = rewards
        self.template, self.pair_template = template, pair_template
        self.batch_size, self.max_wait_s, self.retries, self.chat = batch_size, max_wait_s, retries, chat
        self.gen = {"max_new_tokens": 8, **gen}
        self._answers: dict[tuple, Any] = {}  # key -> label / choice / UNKNOWN
        self._pending: set[tuple] = set()
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._counts = dict(submitted=0, cache_hits=0, annotated=0, unknown=0, errors=0, backend_calls=0)
        self._busy_s = 0.0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._work, name="caption-annotator", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ the env side
    def submit(self, caption: str, mission: str = "") -> None:
        """Queue ``caption`` for a label unless it is answered or already queued. Never blocks."""
        self._submit(("label", mission, caption))

    def submit_pair(self, a: str, b: str, mission: str = "") -> None:
        """Queue the question "is ``a`` or ``b`` more progress?". Never blocks."""
        self._submit(("pair", mission, a, b))

    def _submit(self, key: tuple) -> None:
        with self._lock:
            self._counts["submitted"] += 1
            if key in self._answers or key in self._pending:
                self._counts["cache_hits"] += 1
                return
            self._pending.add(key)
        self._queue.put(key)

    def label(self, caption: str, mission: str = "") -> Any:
        """The parsed label, :data:`UNKNOWN` if the answer was unreadable, or None if not answered yet."""
        return self._answers.get(("label", mission, caption))

    def preference(self, a: str, b: str, mission: str = "") -> Any:
        """ "A", "B", "tie", :data:`UNKNOWN`, or None if not answered yet."""
        return self._answers.get(("pair", mission, a, b))

    def reward(self, caption: str, mission: str = "") -> float:
        """``label_rewards[label]``; 0 while unanswered (as in ONI) and for UNKNOWN answers."""
        value = self.label(caption, mission)
        if value is None or value is UNKNOWN:
            return 0.0
        return self.label_rewards.get(value, 0.0)

    def labels(self) -> dict[tuple[str, str], Any]:
        """All answered labels: ``{(mission, caption): label or UNKNOWN}``."""
        return {(k[1], k[2]): v for k, v in list(self._answers.items()) if k[0] == "label"}

    def preferences(self) -> list[tuple[str, str, str]]:
        """All readable preferences as ``(a, b, "A" | "B" | "tie")`` (for a Bradley-Terry fit)."""
        return [
            (k[2], k[3], v) for k, v in list(self._answers.items()) if k[0] == "pair" and v is not UNKNOWN
        ]

    # ------------------------------------------------------------------------------ bookkeeping
    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued question is answered (or failed); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    def stats(self) -> dict[str, float]:
        """Counts plus ``cache_hit_rate`` (submissions answered or queued already) and ``captions_per_s``
        (answers per second of backend time)."""
        with self._lock:
            s: dict[str, float] = dict(self._counts)
            s["pending"] = len(self._pending)
            busy = self._busy_s
        s["cache_hit_rate"] = s["cache_hits"] / s["submitted"] if s["submitted"] else 0.0
        s["captions_per_s"] = s["annotated"] / busy if busy > 0 else 0.0
        return s

    def close(self) -> None:
        """Stop the thread after the batch in flight (queued questions are dropped)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=60)

    def __enter__(self) -> CaptionAnnotator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ the thread
    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = [first], False
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._annotate(batch)
            if stop:
                return

    def _annotate(self, batch: list[tuple]) -> None:
        for kind, parser in (("label", self.label_parser), ("pair", self.choice_parser)):
            keys = [k for k in batch if k[0] == kind]
            if not keys:
                continue
            prompts = [self._prompt(k) for k in keys]
            t0 = time.perf_counter()
            try:
                results = parse_many_with_retry(
                    self.backend, prompts, parser, retries=self.retries, **self.gen
                )
                error = None
            except Exception as e:  # a broken backend must not stop training: count it and go on
                results, error = None, f"{type(e).__name__}: {e}"
            with self._idle:
                self._counts["backend_calls"] += 1
                for i, key in enumerate(keys):
                    self._pending.discard(key)
                    r = None if results is None else results[i]
                    if r is None or (not r.ok and (r.reason or "").startswith("backend error")):
                        self._counts["errors"] += 1
                        self.last_error = error or (r.reason if r is not None else None)
                        continue  # not stored: the next submission asks again
                    self._answers[key] = r.value
                    self._counts["annotated"] += 1
                    self._counts["unknown"] += r.value is UNKNOWN
                self._busy_s += time.perf_counter() - t0
                self._idle.notify_all()

    def _prompt(self, key: tuple) -> str | list[dict[str, str]]:
        mission = key[1] or "not given"
        if key[0] == "label":
            text = self.template.format(mission=mission, caption=key[2])
        else:
            text = self.pair_template.format(mission=mission, a=key[2], b=key[3])
        return [{"role": "user", "content": text}] if self.chat else text
