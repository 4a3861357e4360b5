"""A bench method's ``backend_options``: validated at load, outside the run's identity, and carried by the
worker to the language agent's backend, whose failing server fails the run with its last error."""

from __future__ import annotations

import json

import pytest
from lm_fake_server import FakeOpenAIServer

from gendm.bench.spec import RunSpec, parse_spec
from gendm.bench.worker import execute
from gendm.core.errors import SpecError

pytest.importorskip("transformers")

LEVEL = "BabyAI-GoToRedBallNoDists-v0"
AGENT_SET = {"max_steps": 3, "history": 1, "max_new_tokens": 8}


def _spec(method: dict, task: dict | None = None) -> dict:
    return {
        "seeds": 1,
        "steps": 4,
        "eval_every": 2,
        "eval_episodes": 2,
        "methods": {"react": method},
        "tasks": [task or {"env": LEVEL}],
    }


def test_backend_options_are_validated_and_stay_out_of_the_run_id():
    backend = "openai:http://127.0.0.1:9/v1#m"
    plain = parse_spec(_spec({"backend": backend})).runs[0]
    limited = parse_spec(_spec({"backend": backend, "backend_options": {"timeout_s": 5, "max_retries": 0}}))
    run = limited.runs[0]
    assert run.backend_options["timeout_s"] == 5.0 and run.backend_options["max_retries"] == 0
    assert run.backend_options["deadline_s"] == 60.0  # resolved with the defaults
    assert run.run_id == plain.run_id and run.config_hash == plain.config_hash
    assert RunSpec.from_json(run.to_json()) == run and plain.backend_options is None


@pytest.mark.parametrize(
    ("method", "task", "match"),
    [
        (
            {"backend": "openai:http://h/v1#m", "backend_options": {"timeout": 5}},
            None,
            r"methods\.react\.backend_options: BackendOptions has no field 'timeout'.*timeout_s",
        ),
        (
            {"backend": "openai:http://h/v1#m", "backend_options": {"max_failure_rate": 1.5}},
            None,
            r"methods\.react\.backend_options: Field 'max_failure_rate': must be in \[0, 1\)",
        ),
        (
            {"backend": "hf:/m", "backend_options": {"max_retries": 1}},
            None,
            r"methods\.react\.backend_options: max_retries configure an openai: server client",
        ),
        (
            {"algo": "loop", "backend_options": {"timeout_s": 1}},
            {"text_task": "addition"},
            r"methods\.react\.backend_options: loop loads its model itself",
        ),
        (
            {"algo": "ppo", "backend_options": {"timeout_s": 1}},
            {"env": "CartPole-v1"},
            r"methods\.react\.backend_options: ppo is no language agent",
        ),
    ],
)
def test_bad_backend_options_name_the_field(method, task, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(_spec(method, task))


def test_worker_fails_an_agent_run_whose_server_answers_500(tmp_path):
    server = FakeOpenAIServer(fail_with="http500")
    options = {"max_retries": 1, "failure_min_calls": 2}
    spec = parse_spec(
        _spec({"backend": f"openai:{server.url}#m", "set": AGENT_SET, "backend_options": options})
    )
    try:
        summary = execute(spec.runs[0], tmp_path / "run")
        calls = server.total
    finally:
        server.close()
    assert summary["status"] == "failed" and summary["error"].startswith("BackendFailingError")
    assert "failed 2 of its 2 calls" in summary["error"] and "HTTP 500" in summary["error"]
    assert calls == 2 * 2  # max_retries = 1 reached the backend: two attempts per call


def test_worker_records_the_backend_options_of_a_finished_run(tmp_path):
    server = FakeOpenAIServer()  # echoes: unreadable answers, but the server answers every call
    spec = parse_spec(
        _spec({"backend": f"openai:{server.url}#m", "set": AGENT_SET, "backend_options": {"timeout_s": 7}})
    )
    try:
        summary = execute(spec.runs[0], tmp_path / "run")
    finally:
        server.close()
    assert summary["status"] == "ok" and summary["agent_stats"]["backend_errors"] == 0
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["backend_options"]["timeout_s"] == 7.0 and written["backend_options"]["max_retries"] == 3
