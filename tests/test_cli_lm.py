"""``gendm agent`` and ``gendm finetune``: the language-model commands write their summaries, and bad
input is a clear error."""

from __future__ import annotations

import json

import pytest
from lm_fake_server import FakeOpenAIServer

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
