"""The OpenAI-compatible client against a real server: ``transformers serve`` (transformers' ``serving``
extra) on loopback, serving a tiny GPT-2 built by :mod:`gendm.lm.tiny`. Nothing is downloaded
(``HF_HUB_OFFLINE=1``; the server is pinned to the local model directory, which is also the model name
a request must carry).

That server fails on the ``stop`` field for this tokenizer (HTTP 400 ``{"detail": "substring not
found"}``) and answers echo+logprobs requests without log-probabilities: the backend must recover from
the first and name the way around the second.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip("this test drives transformers 5's `transformers serve DIR`", allow_module_level=True)
for _module in ("fastapi", "uvicorn"):
    pytest.importorskip(
        _module, reason="`transformers serve` needs transformers' serving extra: pip install 'gendm[lm]'"
    )

from gendm.cli import main  # noqa: E402
from gendm.lm import NotSupportedError, OpenAICompatibleBackend  # noqa: E402
from gendm.lm.base import cut_at_stop  # noqa: E402

LEVEL = "BabyAI-GoToRedBallNoDists-v0"
START_TIMEOUT_S = 90
TEXTS = [
    "Thought : I will go forward .\nAction : go forward",
    "Thought : the ball is left .\nAction : turn left",
    "Observation : you see a red ball and a grey wall",
    "the cat sat on the mat",
]
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}\n{% endfor %}assistant :"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command(model_dir: Path, port: int) -> list[str]:
    script = Path(sys.executable).with_name("transformers")
    cli = [str(script)] if script.is_file() else [sys.executable, "-m", "transformers.cli.transformers"]
    return [*cli, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(base URL, model directory) of a running ``transformers serve``; stopped after the module."""
    from gendm.lm.tiny import save_model_dir, tiny_gpt2, word_tokenizer

    root = tmp_path_factory.mktemp("served")
    tok = word_tokenizer(TEXTS)
    tok.chat_template = CHAT_TEMPLATE
    model_dir = save_model_dir(tiny_gpt2(tok, n_positions=512), tok, root / "tiny")
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    log = open(root / "serve.log", "wb")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen(_serve_command(model_dir, port), stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}: {_tail(root / 'serve.log')}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"transformers serve not up after {START_TIMEOUT_S} s: {_tail(root / 'serve.log')}"
                )
            time.sleep(0.25)
        yield f"{url}/v1", str(model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-1500:]


def _raw_status(url: str, payload: dict) -> int:
    req = urllib.request.Request(
        f"{url}/completions", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_completions_with_stop_recover_from_the_servers_400(served, caplog):
    url, model = served
    base = {"model": model, "prompt": "the cat", "max_tokens": 8, "temperature": 0}
    # the premise: this server refuses stop (and only stop) for this tokenizer
    assert _raw_status(url, base) == 200 and _raw_status(url, {**base, "stop": ["\n"]}) == 400
    b = OpenAICompatibleBackend(url, model, timeout_s=60, max_retries=1, backoff_s=0.05)
    prompts = ["the cat", "Thought : I will"]
    plain = b.complete(prompts, max_new_tokens=8)
    assert all(c.ok and c.text for c in plain), [c.error for c in plain]
    words = plain[0].text.split()
    stop = words[len(words) // 2]  # a string the greedy answer contains
    with caplog.at_level(logging.WARNING, logger="gendm.lm.openai"):
        cut = b.complete(prompts, max_new_tokens=8, stop=[stop])
        again = b.complete(prompts, max_new_tokens=8, stop=[stop])
    assert all(c.ok for c in cut), [c.error for c in cut]
    assert [c.text for c in cut] == [cut_at_stop(c.text, (stop,))[0] for c in plain]
    assert cut[0].finish_reason == "stop" and [c.text for c in again] == [c.text for c in cut]
    assert b.stop_rejected
    assert sum("rejects the `stop` field" in r.getMessage() for r in caplog.records) == 1


def test_chat_with_stop_works_and_logprobs_name_the_way_around(served):
    from gendm.language_agents import QModel, QRerankAgent, ReActAgent

    url, model = served
    b = OpenAICompatibleBackend(url, model, timeout_s=60, max_retries=1, backoff_s=0.05)
    (answer,) = b.chat([[{"role": "user", "content": "the cat"}]], max_new_tokens=6, stop=["\nObservation:"])
    assert answer.ok, answer.error
    # the server ignores echo / logprobs and answers without log-probabilities
    agent = QRerankAgent(ReActAgent(b), QModel(), proposal="logprobs")
    agent.reset("Mission: go to the red ball")
    with pytest.raises(NotSupportedError, match="without token log-probabilities") as e:
        agent.act("You see a wall.", ["turn left", "go forward"])
    assert "--proposal sample" in str(e.value)


def test_gendm_agent_react_plays_over_transformers_serve(served, tmp_path):
    url, model = served
    out = tmp_path / "run"
    argv = ["agent", "react", "--env", LEVEL, "--backend", f"openai:{url}#{model}", "--episodes", "1"]
    assert main([*argv, "--max-steps", "2", "--max-new-tokens", "8", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["backend_errors"] == 0 and s["last_error"] == ""  # every call answered (stop dropped)
    assert s["lm_calls"] >= 2 and s["mean_steps"] == 2
