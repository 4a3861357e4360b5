"""Language methods in a bench spec: language agents on text environments and LOOP on a text task run
through the same harness (store, statistics, report) as the RL methods, and misfits are refused."""

from __future__ import annotations

import json

import pytest
from lm_fake_server import FakeOpenAIServer

from gendm.bench.report import write_report
from gendm.bench.runner import run_bench
from gendm.bench.spec import parse_spec
from gendm.core.errors import SpecError

pytest.importorskip("transformers")

LEVEL = "BabyAI-GoToRedBallNoDists-v0"


def _spec(methods: dict, tasks: list, **top) -> dict:
    return {
        "seeds": 2,
        "steps": 4,
        "eval_every": 2,
        "eval_episodes": 2,
        "methods": methods,
        "tasks": tasks,
    } | top


def test_language_methods_expand_only_onto_tasks_they_can_play():
    spec = parse_spec(
        _spec(
            {
                "react": {"backend": "openai:http://127.0.0.1:9/v1#m", "set": {"history": 2}},
                "loop": {},
                "ppo": {},
            },
            [{"env": LEVEL}, {"text_task": "addition"}, {"env": "CartPole-v1"}],
        )
    )
    pairs = {(r.method, r.task) for r in spec.runs}
    assert pairs == {("react", LEVEL), ("loop", "text:addition"), ("ppo", "CartPole-v1")}
    react = next(r for r in spec.runs if r.method == "react")
    assert react.backend == "openai:http://127.0.0.1:9/v1#m" and react.config["history"] == 2
    loop = next(r for r in spec.runs if r.method == "loop")
    assert loop.backend is None and loop.config["learning_rate"] == 1e-3  # the tiny model's defaults
    reasons = "\n".join(spec.skipped)
    assert "react (react) is a language agent, and 'CartPole-v1' is not a text environment" in reasons
    assert "ppo (ppo) cannot learn text task text:addition" in reasons
    assert "loop (loop) fine-tunes a language model on a text task, and CartPole-v1 is not one" in reasons
    # the backend is part of a run's identity
    other = parse_spec(_spec({"react": {"backend": "openai:http://127.0.0.1:9/v1#n"}}, [LEVEL]))
    assert {r.run_id for r in other.runs}.isdisjoint(r.run_id for r in spec.runs)


@pytest.mark.parametrize(
    ("methods", "tasks", "match"),
    [
        ({"a": {"algo": "reakt", "backend": "hf:/m"}}, [LEVEL], r"methods\.a\.algo.*Did you mean: react"),
        ({"react": {}}, [LEVEL], r"methods\.react\.backend is missing"),
        ({"react": {"backend": "gpt-4"}}, [LEVEL], r"methods\.react\.backend.*is no backend"),
        ({"loop": {"backend": "openai:http://h/v1#m"}}, [{"text_task": "addition"}], "local model directory"),
        (
            {"react": {"backend": "hf:/m", "set": {"histroy": 2}}},
            [LEVEL],
            r"methods\.react\.set.*'histroy'. Did you mean: history",
        ),
        (
            {"loop": {}},
            [{"text_task": "additon"}],
            r"tasks\[0\]\.text_task.*'additon'. Did you mean: addition",
        ),
        ({"ppo": {"backend": "hf:/m"}}, ["CartPole-v1"], r"methods\.ppo\.backend: ppo is no language"),
        ({"react": {"backend": "hf:/m"}}, [{"env": "/nowhere/game.z8"}], r"tasks\[0\]\.env: No TextWorld"),
    ],
)
def test_malformed_language_methods_name_the_field(methods, tasks, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(_spec(methods, tasks))


def test_a_language_agent_named_for_a_task_it_cannot_play_is_an_error():
    methods = {"react": {"backend": "hf:/m"}}
    with pytest.raises(SpecError, match=r"tasks\[0\]\.methods: react .* not a text environment"):
        parse_spec(_spec(methods, [{"env": "CartPole-v1", "methods": ["react"]}]))


def test_bench_plays_language_agents_and_fine_tunes_with_loop(tmp_path):
    from gendm.finetune import LOOPConfig
    from gendm.finetune.text_tasks import finetune_addition

    server = FakeOpenAIServer()  # echoes prompts: never a readable action, so every turn falls back
    backend = f"openai:{server.url}#m"
    agent_set = {"max_steps": 3, "history": 1, "max_new_tokens": 8}
    spec = parse_spec(
        _spec(
            {
                "react": {"backend": backend, "set": agent_set},
                "stateact": {"backend": backend, "set": agent_set},
                "react_down": {
                    "algo": "react",
                    "backend": "openai:http://127.0.0.1:9/v1#m",
                    "set": agent_set,
                },
                "loop": {"set": {"pretrain_steps": 30, "prompts_per_iteration": 4}},
            },
            [{"env": LEVEL}, {"text_task": "addition"}],
        )
    )
    try:
        run_bench(spec, tmp_path / "out", workers=1, progress=False, report=False)
    finally:
        server.close()
    summary = write_report(tmp_path / "out", reps=500)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["runs"] == {"done": 6, "failed": 2}
    played = {}
    for run_dir in (tmp_path / "out" / "runs").iterdir():
        method, _, seed, _ = run_dir.name.split("__")
        if (run_dir / "summary.json").is_file():  # the runs of react_down failed before writing one
            played[method + seed] = json.loads((run_dir / "summary.json").read_text())

    react0, react1, state0 = played["reactseed0"], played["reactseed1"], played["stateactseed0"]
    for s in (react0, react1, state0):
        assert s["env_steps"] == 0 and s["grad_steps"] == 0 and len(s["curve"]) == 1
        assert s["final_return"] == 0.0 and s["success_rate"] == 0.0
        assert s["agent_stats"]["parse_failures"] == 6 and "unreadable" in s["warnings"][0]
    seeds = [[d["seed"] for d in s["episodes_detail"]] for s in (react0, react1, state0)]
    assert seeds[0] == seeds[2] and set(seeds[0]).isdisjoint(
        seeds[1]
    )  # same episodes per seed, new ones across
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Warnings" in report and "Evaluation only" in report
    # a model server that is down fails the agent's runs with the reason; the bench goes on
    failed = report.split("## Failed runs")[1]
    assert failed.count("react_down") == 2 and "Cannot reach the language-model server" in failed

    loop0 = played["loopseed0"]
    assert [p["iterations"] for p in loop0["curve"]] == [0, 2, 4]
    assert loop0["env_steps"] == 4 * 4 * 4 and loop0["grad_steps"] == 4 * 2  # 16 completions: 1 minibatch
    # the bench runs what the library call runs: the same curve up to float rounding, which another
    # process with other threads or another CPU's kernels may change in the last digits
    config = LOOPConfig(learning_rate=1e-3, max_new_tokens=2, group_size=4, prompts_per_iteration=4)
    _, direct = finetune_addition(config, 4, seed=0, pretrain_steps=30, eval_every=2)
    expected = [s for _, s in direct["success_curve"]]
    assert [p["return_mean"] for p in loop0["curve"]] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert summary["scores"]["loop"]["text:addition"]["final_returns"][0] == loop0["final_return"]


def test_the_builtin_language_spec_runs_loop_on_five_seeds():
    from gendm.bench.spec import load_spec

    spec = load_spec("language")
    assert [(r.algo, r.task, r.seed, r.steps) for r in spec.runs] == [
        ("loop", "text:addition", s, 150) for s in range(5)
    ]
