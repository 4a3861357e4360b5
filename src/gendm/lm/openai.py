"""A client for any server that speaks the OpenAI HTTP API (vLLM, llama.cpp, TGI, OpenAI itself).

Standard library only (``urllib`` + a thread pool), so the backend adds no dependency.

Error semantics, chosen so that a long run survives a flaky server and still says what happened:

- Each prompt is one request. Connection errors, timeouts, HTTP 429, HTTP 5xx and unreadable
  answers (bad JSON, missing fields — typically a truncated body from an overloaded proxy) are
  retried up to ``max_retries`` times with exponential backoff (``backoff_s * 2**attempt``, or the
  server's ``Retry-After`` for 429 when it is at most 60 s). Other 4xx answers are the request's
  fault and are not retried.
- An item that still fails becomes ``Completion(text="", finish_reason="error", error=...)``; the
  rest of the batch is unaffected. ``complete``/``chat`` never raise for a single bad item.
- If *every* item of a batch failed because the server could not be reached (connection refused,
  DNS failure), the server is down or the URL is wrong rather than one request being bad, so
  :class:`BackendUnavailableError` is raised naming the URL (``raise_if_unreachable=False`` turns
  this off and returns the error completions instead).
- ``logprobs`` and ``embed`` have no per-item error slot, so they raise :class:`LMError` when a
  request fails after its retries. ``logprobs`` uses ``/completions`` with ``echo=True`` and
  ``logprobs`` (the legacy API that vLLM still serves); a server that refuses it, or answers
  without token log-probabilities, raises :class:`NotSupportedError`, and later calls fail fast.
- Time: ``timeout_s`` is the socket timeout of one attempt (connecting, and each wait for data);
  ``deadline_s`` bounds one request in total, across its attempts and backoff waits (the last
  attempt's timeout is cut to the time left, and an answer still arriving at the deadline is given
  up). A server that accepts connections and never answers costs at most ``deadline_s`` per request.
- A server that rejects the ``stop`` field (HTTP 400 on a request that sent it, as ``transformers
  serve`` does for tokenizers its stop-string matcher cannot read) gets the request again without
  it; if that works, the backend remembers it, sends no ``stop`` from then on, cuts the answers at the
  stop strings itself and logs one warning (logger ``gendm.lm.openai``).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np

from gendm.core.errors import ConfigError
from gendm.lm.base import (
    BackendUnavailableError,
    Completion,
    GenerationSettings,
    LMError,
    Message,
    NotSupportedError,
    check_conversation,
    check_pairs,
    cut_at_stop,
)

_log = logging.getLogger(__name__)


class RequestFailed(LMError):
    """One HTTP request failed for good (after retries, or at once for a non-retryable error)."""

    def __init__(self, message: str, *, status: int | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable


class _Retryable(Exception):
    def __init__(self, message: str, *, unreachable: bool = False, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.unreachable, self.wait_s = unreachable, wait_s


class OpenAICompatibleBackend:
    """Batched, bounded-concurrency client of ``{base_url}/completions``, ``/chat/completions`` and
    ``/embeddings``. ``base_url`` may end with ``/v1`` or not; the API key is read from the
    environment variable ``api_key_env`` at each request (no header when unset, as local servers
    need none)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 30,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        settings: GenerationSettings | None = None,
        raise_if_unreachable: bool = True,
        deadline_s: float = 60,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"OpenAICompatibleBackend base_url must start with http:// or https://, got {base_url!r}."
            )
        if not model:
            raise ConfigError("OpenAICompatibleBackend needs a model name (the server's model id).")
        for name, value, low in (("max_concurrency", max_concurrency, 1), ("max_retries", max_retries, 0)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"OpenAICompatibleBackend {name} must be an int >= {low}, got {value!r}.")
        if timeout_s <= 0 or deadline_s <= 0 or backoff_s < 0:
            raise ConfigError(
                f"OpenAICompatibleBackend needs timeout_s > 0, deadline_s > 0 and backoff_s >= 0, "
                f"got {timeout_s}, {deadline_s}, {backoff_s}."
            )
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.model, self.api_key_env = model, api_key_env
        self.max_concurrency, self.timeout_s = max_concurrency, timeout_s
        self.max_retries, self.backoff_s, self.deadline_s = max_retries, backoff_s, deadline_s
        self.settings = settings or GenerationSettings()
        self.raise_if_unreachable = raise_if_unreachable
        self.model_id = f"openai:{self.base_url}#{model}"
        self._slots = threading.BoundedSemaphore(max_concurrency)  # bounds concurrent calls too
        self._logprobs_unsupported: str | None = None
        self.stop_rejected = False
        """The server refused the ``stop`` field once: requests go without it (module docstring)."""
        self._stop_lock = threading.Lock()

    # -- HTTP ---------------------------------------------------------------------------------------
    def _post(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST JSON with retries; return the decoded answer or raise :class:`RequestFailed`."""
        url = f"{self.base_url}/{route}"
        start = time.monotonic()
        deadline = start + self.deadline_s
        last: _Retryable | None = None
        attempts, out_of_time = 0, False
        for attempt in range(self.max_retries + 1):
            if attempt:
                wait = self.backoff_s * 2 ** (attempt - 1)
                if last is not None and last.wait_s is not None:
                    wait = last.wait_s
                if time.monotonic() + wait >= deadline:
                    out_of_time = True
                    break
                time.sleep(wait)
            try:
                with self._slots:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        out_of_time = True
                        break
                    attempts += 1
                    return self._post_once(url, payload, min(self.timeout_s, left), deadline)
            except _Retryable as e:
                last = e
        elapsed = time.monotonic() - start
        why = f"{last}" if last is not None else "no attempt started"
        limit = f", stopped at deadline_s={self.deadline_s:g}" if out_of_time else ""
        tries = f"{attempts} attempt{'s' * (attempts != 1)}"
        raise RequestFailed(
            f"POST {url} failed after {tries} in {elapsed:.1f} s{limit}: {why}",
            unreachable=last is not None and last.unreachable,
        )

    def _post_once(
        self, url: str, payload: dict[str, Any], timeout: float, deadline: float
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                chunks = []
                while chunk := resp.read1(1 << 16):
                    chunks.append(chunk)
                    if time.monotonic() > deadline:  # trickling past the deadline
                        raise _Retryable(
                            f"timed out: still reading the answer at deadline_s={self.deadline_s:g}"
                        )
                body = b"".join(chunks)
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            if e.code == 429 or e.code >= 500:
                retry_after = _retry_after(e.headers.get("Retry-After")) if e.code == 429 else None
                raise _Retryable(f"HTTP {e.code}: {detail}", wait_s=retry_after) from e
            raise RequestFailed(f"POST {url}: HTTP {e.code}: {detail}", status=e.code) from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError | socket.timeout):
                raise _Retryable(f"timed out after {timeout:.3g} s") from e
            raise _Retryable(f"cannot connect: {e.reason}", unreachable=True) from e
        except TimeoutError as e:
            raise _Retryable(f"timed out after {timeout:.3g} s") from e
        except (OSError, http.client.HTTPException) as e:  # reset or truncated mid-answer
            raise _Retryable(f"connection error: {e}") from e
        try:
            data = json.loads(body)
        except ValueError as e:
            raise _Retryable(f"answer is not JSON: {body[:120]!r}") from e
        if not isinstance(data, dict):
            raise _Retryable(f"answer is not a JSON object: {body[:120]!r}")
        return data

    def _run(self, jobs: list[Callable[[], Completion]]) -> Iterator[tuple[int, Completion]]:
        """Run one job per item on the pool; yield ``(index, completion)`` in arrival order."""
        if not jobs:
            return
        all_down = True  # every answer so far is a connection failure: hold them until we know
        pending: list[tuple[int, Completion]] = []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs))) as pool:
            futures = {pool.submit(job): i for i, job in enumerate(jobs)}
            for fut in as_completed(futures):
                try:
                    c, down = fut.result(), False
                except RequestFailed as e:
                    c, down = Completion.failed(str(e)), e.unreachable
                all_down = all_down and down
                if all_down and self.raise_if_unreachable:
                    pending.append((futures[fut], c))
                    continue
                yield from pending
                pending.clear()
                yield futures[fut], c
        if pending:
            raise BackendUnavailableError(
                f"Cannot reach the language-model server at {self.base_url}: every request of the batch "
                f"failed to connect (first error: {pending[0][1].error}). Is the server running, and is "
                "the URL right?"
            )

    # -- the LanguageModel methods ------------------------------------------------------------------
    def _gen_fields(self, s: GenerationSettings) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "model": self.model,
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
        }
        if not s.greedy:
            fields["top_p"] = s.top_p
        if s.stop:
            fields["stop"] = list(s.stop)
        if s.seed is not None:
            fields["seed"] = s.seed
        return fields

    def _completion_job(
        self, route: str, payload: dict[str, Any], s: GenerationSettings
    ) -> Callable[[], Completion]:
        def job() -> Completion:
            body = _without_stop(payload) if self.stop_rejected else payload
            try:
                data = self._post(route, body)
            except RequestFailed as e:
                if e.status != 400 or "stop" not in body:
                    raise
                data = self._post(route, _without_stop(body))  # still failing: stop was not the cause
                self._note_stop_rejected(e)
            try:
                choice = data["choices"][0]
                text = choice["message"]["content"] if route == "chat/completions" else choice["text"]
            except (KeyError, IndexError, TypeError) as e:
                return Completion.failed(
                    f"POST {self.base_url}/{route}: answer has no text ({e!r}): {str(data)[:200]}"
                )
            # Servers apply stop strings themselves; cutting again covers those that don't (or got none).
            text, cut = cut_at_stop(text or "", s.stop)
            reason = "stop" if cut else choice.get("finish_reason") or "stop"
            return Completion(text=text, finish_reason=reason, meta={"usage": data.get("usage")})

        return job

    def _note_stop_rejected(self, error: RequestFailed) -> None:
        with self._stop_lock:
            if self.stop_rejected:
                return
            self.stop_rejected = True
        detail = " ".join(str(error).split())[-160:]
        _log.warning(
            "warning: %s rejects the `stop` field (%s); sending requests without it and cutting answers "
            "at the stop strings on the client.",
            self.base_url,
            detail,
        )

    def iter_complete(self, prompts: list[str], **gen: Any) -> Iterator[tuple[int, Completion]]:
        s = self.settings.replace(**gen)
        fields = self._gen_fields(s)
        yield from self._run(
            [self._completion_job("completions", {**fields, "prompt": p}, s) for p in prompts]
        )

    def iter_chat(self, conversations: list[list[Message]], **gen: Any) -> Iterator[tuple[int, Completion]]:
        s = self.settings.replace(**gen)
        for i, conv in enumerate(conversations):
            check_conversation(conv, f"conversation {i}")
        fields = self._gen_fields(s)
        jobs = [self._completion_job("chat/completions", {**fields, "messages": c}, s) for c in conversations]
        yield from self._run(jobs)

    def complete(self, prompts: list[str], **gen: Any) -> list[Completion]:
        return _collect(self.iter_complete(prompts, **gen), len(prompts))

    def chat(self, conversations: list[list[Message]], **gen: Any) -> list[Completion]:
        return _collect(self.iter_chat(conversations, **gen), len(conversations))

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        """Sum of the echoed log-probabilities of the continuation's tokens (those starting at or after
        the prompt's end).

        The server tokenises prompt + continuation as one text, so a token that straddles the
        boundary counts for the prompt; join them at a space or newline for exact splits.
        """
        check_pairs(prompts, continuations)
        if self._logprobs_unsupported:
            raise NotSupportedError(self._logprobs_unsupported)
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(prompts)))) as pool:
            return list(pool.map(self._logprob_one, prompts, continuations))

    def _logprob_one(self, prompt: str, continuation: str) -> float:
        # max_tokens=1 and logprobs=1, as lm-evaluation-harness sends: some servers refuse 0.
        full = prompt + continuation
        payload = {
            "model": self.model,
            "prompt": full,
            "max_tokens": 1,
            "echo": True,
            "logprobs": 1,
            "temperature": 0.0,
        }
        try:
            data = self._post("completions", payload)
        except RequestFailed as e:
            if e.status in (400, 404, 405, 422, 501):
                self._logprobs_unsupported = (
                    f"{self.model_id} does not serve prompt log-probabilities (completions with echo=True, "
                    f"logprobs): {e}"
                )
                raise NotSupportedError(self._logprobs_unsupported) from e
            raise
        try:
            lp = data["choices"][0]["logprobs"]
            tokens, values, offsets = lp["tokens"], lp["token_logprobs"], lp["text_offset"]
        except (KeyError, IndexError, TypeError) as e:
            self._logprobs_unsupported = (
                f"{self.model_id} answered an echo+logprobs request without token log-probabilities, so it "
                "cannot score continuations."
            )
            raise NotSupportedError(self._logprobs_unsupported) from e
        # Tokens from the prompt's end up to the end of the echoed text (the generated token is dropped).
        picked = [v for v, o in zip(values, offsets) if len(prompt) <= o < len(full)]
        if not picked or any(v is None for v in picked):
            raise LMError(
                f"{self.model_id}: no log-probabilities for continuation {continuation!r} (tokens {tokens})."
            )
        return float(sum(picked))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors from ``/embeddings``, in input order (one request per ``max_concurrency`` texts)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        step = max(1, -(-len(texts) // self.max_concurrency))
        chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            parts = list(pool.map(self._embed_chunk, chunks))
        return np.concatenate(parts).astype(np.float32)

    def _embed_chunk(self, texts: list[str]) -> np.ndarray:
        data = self._post("embeddings", {"model": self.model, "input": texts})
        try:
            rows = sorted(data["data"], key=lambda d: d["index"])
            vecs = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise LMError(f"{self.model_id}: malformed /embeddings answer ({e!r}): {str(data)[:200]}") from e
        if vecs.ndim != 2 or len(vecs) != len(texts):
            raise LMError(
                f"{self.model_id}: /embeddings returned {len(vecs)} vectors for {len(texts)} texts."
            )
        return vecs


def _without_stop(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "stop"}


def _retry_after(value: str | None) -> float | None:
    try:
        wait = float(value) if value is not None else None
    except ValueError:
        return None
    return wait if wait is not None and 0 <= wait <= 60 else None


def _collect(items: Iterator[tuple[int, Completion]], n: int) -> list[Completion]:
    out: list[Completion | None] = [None] * n
    for i, c in items:
        out[i] = c
    return out  # type: ignore[return-value]
