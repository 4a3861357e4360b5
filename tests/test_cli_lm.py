"""``gendm agent`` and ``gendm finetune``: the language-model commands write their summaries, and bad
input is a clear error."""

from __future__ import annotations

import json
import logging
import time

import pytest
from lm_fake_server import FakeOpenAIServer, HangingServer

from gendm.cli import main

pytest.importorskip("transformers")


def test_agent_plays_over_an_openai_server_and_counts_unreadable_answers(tmp_path, capsys):
    server = FakeOpenAIServer()  # echoes prompts: never a valid action, so every turn falls back
    argv = ["agent", "react", "--env", "BabyAI-GoToRedBallNoDists-v0", "--backend", f"openai:{server.url}#m"]
    argv += ["--episodes", "2", "--max-steps", "3", "--cache", str(tmp_path / "c.sqlite")]
    try:
        assert main([*argv, "--out", str(tmp_path / "a")]) == 0
        calls = server.total
        assert main([*argv, "--out", str(tmp_path / "b")]) == 0  # the same episodes again
    finally:
        server.close()
    first, second = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "ab")
    assert first["episodes"] == 2 and first["success_rate"] == 0.0 and first["mean_steps"] == 3
    assert first["parse_failures"] == 6 and first["lm_calls"] == 12  # one retry per turn
    assert second["cache_hits"] == 12 and server.total == calls  # answered from the cache
    assert "unreadable answers 6" in capsys.readouterr().out


def _agent_argv(url: str, tmp_path, *extra: str) -> list[str]:
    argv = ["agent", "react", "--env", "BabyAI-GoToRedBallNoDists-v0", "--backend", f"openai:{url}#m"]
    return [*argv, "--episodes", "2", "--max-steps", "3", "--out", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize(("mode", "said"), [("http500", "HTTP 500"), ("garbage", "not JSON")])
def test_agent_run_fails_with_the_last_error_when_the_server_answers_but_fails(tmp_path, capsys, mode, said):
    server = FakeOpenAIServer(fail_with=mode)
    try:
        rc = main(_agent_argv(server.url, tmp_path, "--max-retries", "0"))
        calls = server.total
    finally:
        server.close()
    err = capsys.readouterr().err
    assert rc == 2 and "gendm: error:" in err and said in err
    assert "failed 3 of its 3 calls" in err  # failure_min_calls=3: the run stopped at the third call
    assert calls == 3 and not (tmp_path / "run" / "summary.json").exists()


def test_agent_flags_reach_the_backend(tmp_path, capsys):
    server = FakeOpenAIServer(fail_with="http500")
    try:
        argv = _agent_argv(server.url, tmp_path, "--max-retries", "2", "--failure-min-calls", "2")
        assert main([*argv, "--max-failure-rate", "0.9"]) == 2
        calls = server.total
    finally:
        server.close()
    assert calls == 2 * 3  # two model calls, each tried 1 + max_retries times
    assert "failed 2 of its 2 calls, more than max_failure_rate=0.9" in capsys.readouterr().err
    hang = HangingServer()
    try:
        argv = _agent_argv(hang.url, tmp_path, "--timeout-s", "0.25", "--max-retries", "0")
        assert main([*argv, "--failure-min-calls", "1"]) == 2
    finally:
        hang.close()
    assert "timed out after 0.25 s" in capsys.readouterr().err
    # client limits are for HTTP servers; a model loaded in-process refuses them before loading anything
    argv = ["agent", "react", "--env", "BabyAI-GoToRedBallNoDists-v0", "--backend", "hf:/m"]
    assert main([*argv, "--timeout-s", "5", "--out", str(tmp_path / "hf")]) == 2
    assert "timeout_s configure an openai: server client" in capsys.readouterr().err


def test_agent_on_a_server_that_never_answers_is_bounded_by_the_deadline(tmp_path, capsys):
    hang = HangingServer()
    try:
        # without the deadline: 3 calls x 6 attempts x 1 s = 18 s; with it, 3 calls x 1.5 s
        argv = _agent_argv(
            hang.url, tmp_path, "--timeout-s", "1", "--max-retries", "5", "--deadline-s", "1.5"
        )
        t0 = time.monotonic()
        rc = main(argv)
        elapsed = time.monotonic() - t0
    finally:
        hang.close()
    err = capsys.readouterr().err
    assert rc == 2 and "gendm: error:" in err and "timed out" in err and "deadline_s=1.5" in err
    assert elapsed < 12, elapsed


def test_agent_over_a_server_that_rejects_stop_runs_without_it(tmp_path, caplog):
    server = FakeOpenAIServer(rejects_stop=True)
    try:
        with caplog.at_level(logging.WARNING, logger="gendm.lm.openai"):
            assert main(_agent_argv(server.url, tmp_path)) == 0
        with_stop = sum("stop" in p for p in server.payloads)
    finally:
        server.close()
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["backend_errors"] == 0 and s["lm_calls"] == 12  # unreadable echoes, but every call answered
    assert with_stop == 1  # refused once, then remembered
    assert sum("rejects the `stop` field" in r.getMessage() for r in caplog.records) == 1


def test_agent_refuses_a_missing_game_file(tmp_path, capsys):
    argv = [
        "agent",
        "stateact",
        "--env",
        str(tmp_path / "nowhere.z8"),
        "--backend",
        "openai:http://127.0.0.1:9/v1#m",
    ]
    assert main(argv) == 2
    assert "No TextWorld game file" in capsys.readouterr().err


def test_finetune_loop_writes_summary_and_a_loadable_model(tmp_path):
    out = tmp_path / "ft"
    assert main(["finetune", "loop", "--iterations", "4", "--out", str(out), "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert len(s["reward_curve"]) == 4 and 0 <= s["initial_success"] <= 1 and 0 <= s["final_success"] <= 1
    assert s["config"]["learning_rate"] == 1e-3
    # the saved model continues through the HF path
    again = tmp_path / "again"
    argv = ["finetune", "loop", "--model", str(out / "model"), "--iterations", "1", "--out", str(again)]
    assert main([*argv, "--set", "max_new_tokens=2", "--set", "group_size=2", "--no-progress"]) == 0
    assert json.loads((again / "summary.json").read_text())["success_measure"].startswith("mean reward")


def test_finetune_bad_override_names_the_field(tmp_path, capsys):
    assert main(["finetune", "loop", "--set", "group_sise=4", "--out", str(tmp_path)]) == 2
    assert "group_size" in capsys.readouterr().err
