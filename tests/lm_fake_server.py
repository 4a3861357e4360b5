"""A loopback OpenAI-compatible server for the language-model tests (not a test module).

What it answers depends on words in the prompt (or the last chat message):
SLOW (sleeps past the client's timeout), MALFORMED (200 with invalid JSON), FLAKY (500 twice, then
success), RATE (429 once, then success), BAD (400), PAUSE (sleeps 0.2 s, to measure concurrency);
anything else is echoed back. It counts requests per prompt and in total.

Server-wide failure modes: ``fail_with="http500"`` answers every completion with HTTP 500,
``fail_with="garbage"`` with a 200 whose body is not JSON (an HTML error page); ``rejects_stop=True``
answers HTTP 400 ``{"detail": "substring not found"}`` to any request carrying ``stop`` (as
``transformers serve`` does for some tokenizers) and otherwise writes on past a stop string
("...\nObservation: ..."), so only a client-side cut removes it. :class:`HangingServer` accepts
connections and never answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAIServer:
    def __init__(
        self,
        supports_logprobs: bool = True,
        slow_s: float = 1.0,
        fail_with: str | None = None,
        rejects_stop: bool = False,
    ) -> None:
        assert fail_with in (None, "http500", "garbage")
        self.supports_logprobs = supports_logprobs
        self.slow_s = slow_s
        self.fail_with, self.rejects_stop = fail_with, rejects_stop
        self.calls: Counter[str] = Counter()
        self.total = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.headers: list[dict[str, str]] = []
        self.payloads: list[dict] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner._lock:
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                try:
                    owner._handle(self, body)
                finally:
                    with owner._lock:
                        owner.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- routing ------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        if h.path == "/v1/embeddings":
            with self._lock:
                self.total += 1
                self.calls["<embed>"] += 1
            data = [
                {"index": i, "embedding": [float(len(t)), float(t.count("a")), 1.0]}
                for i, t in enumerate(body["input"])
            ]
            return self._send(h, 200, {"data": list(reversed(data))})  # out of order on purpose
        chat = h.path == "/v1/chat/completions"
        if not chat and h.path != "/v1/completions":
            return self._send(h, 404, {"error": "no such route"})
        text = body["messages"][-1]["content"] if chat else body["prompt"]
        with self._lock:
            self.total += 1
            self.calls[text] += 1
            n = self.calls[text]
            self.headers.append(dict(h.headers))
            self.payloads.append(body)
        if body.get("echo"):
            return self._logprobs(h, body)
        if self.fail_with == "http500":
            return self._send(h, 500, {"error": "internal server error: model worker crashed"})
        if self.fail_with == "garbage":
            return self._send_raw(h, 200, b"<html><body>502 Bad Gateway</body></html>")
        if self.rejects_stop and "stop" in body:
            return self._send(h, 400, {"detail": "substring not found"})
        if "SLOW" in text:
            time.sleep(self.slow_s)
        if "PAUSE" in text:
            time.sleep(0.2)
        if "MALFORMED" in text:
            return self._send_raw(h, 200, b"{not json")
        if "FLAKY" in text and n <= 2:
            return self._send(h, 500, {"error": "internal"})
        if "RATE" in text and n <= 1:
            return self._send(h, 429, {"error": "slow down"}, extra={"Retry-After": "0"})
        if "BAD" in text:
            return self._send(h, 400, {"error": "bad request"})
        more = "\nObservation: the model wrote on" if self.rejects_stop else ""
        if chat:
            choice = {
                "message": {"role": "assistant", "content": f"chat:{text}{more}"},
                "finish_reason": "stop",
            }
        else:
            choice = {"text": f"echo:{text}{more}", "finish_reason": "stop"}
        return self._send(h, 200, {"choices": [choice], "usage": {"total_tokens": 3}})

    def _logprobs(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        if not self.supports_logprobs:
            return self._send(h, 400, {"error": "echo is not supported"})
        text, tokens, offsets, pos = body["prompt"], [], [], 0
        for word in text.split(" "):  # a whitespace "tokenizer": " word" tokens after the first
            tok = word if pos == 0 else " " + word
            tokens.append(tok)
            offsets.append(pos)
            pos += len(tok)
        values = [None] + [-0.5 * (i + 1) for i in range(1, len(tokens))]  # the first token has none
        tokens.append(" generated")  # max_tokens=1: one generated token follows the echo
        values.append(-9.0)
        offsets.append(pos)
        lp = {"tokens": tokens, "token_logprobs": values, "text_offset": offsets}
        return self._send(h, 200, {"choices": [{"text": text, "logprobs": lp, "finish_reason": "length"}]})

    def _send(self, h: BaseHTTPRequestHandler, code: int, obj: dict, extra: dict | None = None) -> None:
        self._send_raw(h, code, json.dumps(obj).encode(), extra)

    def _send_raw(self, h: BaseHTTPRequestHandler, code: int, data: bytes, extra: dict | None = None) -> None:
        try:
            h.send_response(code)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


class HangingServer:
    """Accepts TCP connections on loopback and never answers (a wedged server behind a live socket)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.sock.settimeout(0.05)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(conn)  # held open, never read or written

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self.accepted:
            conn.close()
        self.sock.close()
