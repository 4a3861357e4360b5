"""Caption annotator throughput: captions/s with and without batching and the cache, and cache hit rate.

The caption stream is what ``LMFeedbackReward`` submits during PPO: the events of every training
step of the captioned MiniGrid tasks under a random policy (``--steps`` vector steps of 8 envs per
task), in order, repeats included. Each backend answers the whole stream in four ways:

- ``no cache, batch 1``: every submission is a model call of one prompt (what a naive reward does);
- ``no cache, batch B``: every submission asked, B prompts per call;
- ``annotator, batch B``: gendm's ``CaptionAnnotator`` (each distinct question asked once per run,
  B per call, background thread) over a cold ``CachedBackend``;
- ``warm cache``: a new annotator over the same SQLite cache file, as in a second run or a resumed one.

captions/s is the stream length over the wall-clock time until every submission has its answer;
hit rate is the share of submissions answered without a model call.

Backends: ``server`` (a loopback OpenAI-compatible server that answers after ``--latency-ms`` per
request, requests served concurrently, as vLLM would; the client's bounded concurrency is 8),
``hf`` (a GPT-2 with random weights built on the spot, ``--hf-layers`` x ``--hf-width``, run by
``HFBackend`` on this CPU), ``embed`` (the all-MiniLM-L6-v2 judge of ``gendm.rewards.factory``).

    .venv/bin/python benchmarks/annotator_throughput.py --out runs/annotator_throughput
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gendm.envs import make_env
from gendm.lm import CachedBackend, GenerationSettings, make_backend
from gendm.lm.parsing import LabelParser, parse_many_with_retry
from gendm.rewards import CaptionAnnotator, events, register_captioned
from gendm.rewards.annotator import LABEL_TEMPLATE

TASKS = ("MiniGrid-DoorKey-8x8-v0", "MiniGrid-KeyCorridorS3R3-v0", "MiniGrid-MultiRoom-N4-S5-v1")


def caption_stream(steps: int, seed: int = 0) -> list[tuple[str, str]]:
    """(mission, event) submissions of random-policy rollouts, in order, repeats included."""
    out: list[tuple[str, str]] = []
    rng = np.random.default_rng(seed)
    for task in TASKS:
        env = make_env(register_captioned(task), 8, seed=seed)
        _, info = env.reset(seed=seed)
        for _ in range(steps):
            _, _, _, _, info = env.step(rng.integers(0, env.single_action_space.n, size=8))
            for caption, mission in zip(info["caption"], info["mission"]):
                out += [(mission, e) for e in events(caption)]
        env.close()
    return out


class LatencyServer:
    """OpenAI-compatible /v1/completions that answers yes/no after a fixed latency per request."""

    def __init__(self, latency_s: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(latency_s)
                prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
                answers = ["yes" if ("key" in p.split("Event:")[1] or "door" in p) else "no" for p in prompts]
                data = json.dumps(
                    {
                        "choices": [
                            {"index": i, "text": f" {a}", "finish_reason": "stop"}
                            for i, a in enumerate(answers)
                        ]
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def make(
    kind: str, args: argparse.Namespace, workdir: Path, stream: list[tuple[str, str]]
) -> tuple[Any, str]:
    settings = GenerationSettings(max_new_tokens=4)
    if kind == "server":
        server = LatencyServer(args.latency_ms / 1000)
        return make_backend(
            f"openai:{server.url}#judge", settings=settings
        ), f"loopback server, {args.latency_ms} ms/request"
    if kind == "hf":
        from gendm.lm.tiny import save_model_dir, tiny_gpt2, word_tokenizer

        tok = word_tokenizer([LABEL_TEMPLATE.format(mission=m, caption=e) for m, e in stream] + ["yes no"])
        model = tiny_gpt2(tok, n_layer=args.hf_layers, n_embd=args.hf_width, n_positions=256, n_head=4)
        path = save_model_dir(model, tok, workdir / "gpt2")
        return make_backend(
            f"hf:{path}", settings=settings
        ), f"GPT-2 {args.hf_layers}x{args.hf_width} (HFBackend, CPU)"
    from gendm.rewards.factory import EmbeddingJudge

    return EmbeddingJudge(), "all-MiniLM-L6-v2 judge"


def no_cache(backend: Any, stream: list[tuple[str, str]], batch: int) -> float:
    parser = LabelParser(("yes", "no"))
    prompts = [LABEL_TEMPLATE.format(mission=m, caption=e) for m, e in stream]
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch):
        parse_many_with_retry(backend, prompts[i : i + batch], parser, retries=1, max_new_tokens=4)
    return time.perf_counter() - t0


def through_annotator(backend: Any, stream: list[tuple[str, str]], batch: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    with CaptionAnnotator(backend, batch_size=batch, max_new_tokens=4) as ann:
        for m, e in stream:
            ann.submit(e, m)
        assert ann.flush(timeout_s=3600)
        elapsed = time.perf_counter() - t0
        stats = ann.stats()
    return elapsed, stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--backends", nargs="+", default=["server", "hf", "embed"], choices=["server", "hf", "embed"]
    )
    p.add_argument("--steps", type=int, default=100, help="vector steps (8 envs) per task for the stream")
    p.add_argument("--no-cache-limit", type=int, default=1000, help="submissions timed without a cache")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--hf-layers", type=int, default=4)
    p.add_argument("--hf-width", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/annotator_throughput")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stream = caption_stream(args.steps)
    distinct = len(set(stream))
    head = stream[: args.no_cache_limit]
    print(f"stream: {len(stream)} submissions, {distinct} distinct (mission, event) questions")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.backends:
            backend, label = make(kind, args, Path(tmp), stream)
            no_cache(backend, head[:32], args.batch)  # warm-up (model load, first HTTP connections)
            for mode, batch in (("no cache, batch 1", 1), (f"no cache, batch {args.batch}", args.batch)):
                times = [no_cache(backend, head, batch) for _ in range(args.repeats)]
                rows.append(_row(kind, label, mode, len(head), times, 0.0, len(head)))
                print(json.dumps(rows[-1]))
            cold, warm = [], []
            for r in range(args.repeats):
                path = Path(tmp) / f"{kind}-{r}.sqlite"
                t, s_cold = through_annotator(CachedBackend(backend, path), stream, args.batch)
                cold.append(t)
                cached = CachedBackend(backend, path)
                t, _ = through_annotator(cached, stream, args.batch)
                warm.append(t)
                calls = cached.misses
            rows.append(
                _row(
                    kind,
                    label,
                    f"annotator, batch {args.batch}",
                    len(stream),
                    cold,
                    s_cold["cache_hit_rate"],
                    s_cold["annotated"],
                )
            )
            print(json.dumps(rows[-1]))
            hit = 1.0 - calls / len(stream)
            rows.append(_row(kind, label, "warm cache (second run)", len(stream), warm, hit, calls))
            print(json.dumps(rows[-1]))
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "stream": len(stream),
        "distinct": distinct,
        "args": vars(args),
    }
    (out / "annotator_throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "| backend | mode | submissions | captions/s (median) | per-repeat s | hit rate | model items |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['mode']} | {r['submissions']} | {r['captions_per_s']:.0f} | "
            f"{', '.join(f'{t:.2f}' for t in r['seconds'])} | {r['hit_rate']:.3f} | {r['model_items']} |"
        )
    text = "\n".join(lines)
    (out / "annotator_throughput.md").write_text(text + "\n")
    print(text)


def _row(
    kind: str, label: str, mode: str, n: int, times: list[float], hit: float, items: int
) -> dict[str, Any]:
    return {
        "backend": label,
        "kind": kind,
        "mode": mode,
        "submissions": n,
        "seconds": [round(t, 3) for t in times],
        "captions_per_s": n / float(np.median(times)),
        "hit_rate": hit,
        "model_items": int(items),
    }


if __name__ == "__main__":
    main()
