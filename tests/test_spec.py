import pytest

from gendm.bench.spec import load_spec, parse_spec
from gendm.core.errors import SpecError

BASE = {
    "seeds": 2,
    "steps": 1000,
    "methods": {"ppo": {}, "sac": {"set": {"learning_rate": 1e-3}}},
    "tasks": [{"env": "Pendulum-v1"}],
}


def _with(**kw):
    return BASE | kw


def test_expansion_into_runs_with_stable_ids():
    spec = parse_spec(BASE)
    assert {(r.method, r.task, r.seed) for r in spec.runs} == {
        (m, "Pendulum-v1", s) for m in ("ppo", "sac") for s in (0, 1)
    }
    assert parse_spec(BASE).runs[0].run_id == spec.runs[0].run_id
    sac = next(r for r in spec.runs if r.method == "sac")
    assert sac.config["learning_rate"] == 1e-3 and sac.steps == 1000


def test_suites_expand_and_incompatible_pairs_are_skipped_with_a_reason():
    spec = parse_spec(_with(tasks=[{"suite": "classic", "steps": 500}]))
    tasks = {r.task for r in spec.runs if r.method == "sac"}
    assert tasks == {"Pendulum-v1", "MountainCarContinuous-v0"}
    assert any("sac (sac) cannot act in CartPole-v1" in s for s in spec.skipped)


@pytest.mark.parametrize(
    "data, match",
    [
        (_with(stepz=10), r"Unknown key 'stepz'.*Did you mean: steps"),
        (_with(tasks=[{"env": "Pendulum-v1", "eval_evry": 5}]), r"tasks\[0\].*'eval_evry'.*eval_every"),
        (_with(steps="many"), r"steps must be int"),
        (_with(seeds=0), r"seeds must be >= 1"),
        (_with(methods={"x": {"algo": "sacc"}}), r"methods.x.algo.*Did you mean: sac"),
        (
            _with(methods={"sac": {"set": {"learning_rat": 1}}}),
            r"methods.sac.set.*learning_rat.*learning_rate",
        ),
        (_with(methods={"sac": {"set": {"batch_size": "big"}}}), r"methods.sac.set.*batch_size"),
        (_with(tasks=[{"env": "Pendulm-v1"}]), r"tasks\[0\].env.*Pendulum-v1"),
        (_with(tasks=[{"suite": "clasic"}]), r"suite.*Did you mean: classic"),
        (_with(tasks=[{"env": "CartPole-v1", "methods": ["sac"]}]), r"tasks\[0\].methods.*cannot act"),
        (_with(tasks=[{"env": "CartPole-v1", "methods": ["dqn"]}]), r"names 'dqn', which is not defined"),
        ({"tasks": []}, r"missing 'methods'"),
    ],
)
def test_malformed_specs_name_the_field(data, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(data)


def test_builtin_demo_spec_and_bad_toml(tmp_path):
    demo = load_spec("demo")
    assert {r.method for r in demo.runs} == {"sac", "td3", "ppo", "dqn"} and demo.seeds == [0, 1, 2]
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="Built-in specs: demo"):
        load_spec("dmeo")
