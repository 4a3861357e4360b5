import pytest

from gendm.bench.spec import load_spec, parse_spec
from gendm.core.errors import SpecError
from gendm.data.collect import collect
from gendm.data.minari_io import save_dataset

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


def test_a_task_may_set_its_own_seeds():
    tasks = [{"env": "Pendulum-v1", "seeds": [7, 9]}, {"env": "CartPole-v1", "methods": ["ppo"]}]
    spec = parse_spec(_with(tasks=tasks))
    assert {(r.task, r.seed) for r in spec.runs if r.method == "ppo"} == {
        ("Pendulum-v1", 7),
        ("Pendulum-v1", 9),
        ("CartPole-v1", 0),
        ("CartPole-v1", 1),
    }


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
        (
            _with(tasks=[{"env": "Pendulum-v1", "seeds": [0, "1"]}]),
            r"tasks\[0\].seeds\[1\] must be an integer",
        ),
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


def test_builtin_demo_spec_and_bad_toml(tmp_path, monkeypatch):
    # The demo's multimodal task learns from a dataset that `make demo` collects first.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    expert = collect("gendm/TwoPathReach-v0", "expert", episodes=2, progress=False)
    save_dataset(expert, "gendm/twopath/expert-v0")
    demo = load_spec("demo")
    methods = {"sac", "td3", "ppo", "dqn", "bc", "diffusion_policy", "ppo_minigrid", "ppo_lm_feedback"}
    assert {r.method for r in demo.runs} == methods and demo.seeds == [0, 1, 2]
    assert sorted(r.seed for r in demo.runs if r.method == "diffusion_policy") == [0, 1, 2, 3, 4]
    lm = [r for r in demo.runs if r.method == "ppo_lm_feedback"]
    assert len(lm) == 5 and all(r.intrinsic == {"kind": "lm"} and not r.eval_deterministic for r in lm)
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="Built-in specs: demo"):
        load_spec("dmeo")


def test_eval_deterministic_key_reaches_the_runs_and_their_ids():
    base = {"seeds": 1, "methods": {"ppo": {}}, "tasks": [{"env": "CartPole-v1"}]}
    plain = parse_spec(base).runs[0]
    sampled = parse_spec(base | {"eval_deterministic": False}).runs[0]
    per_task = parse_spec(base | {"tasks": [{"env": "CartPole-v1", "eval_deterministic": False}]}).runs[0]
    assert plain.eval_deterministic is True and sampled.eval_deterministic is False
    assert sampled.run_id == per_task.run_id != plain.run_id
    with pytest.raises(SpecError, match="eval_deterministic must be bool"):
        parse_spec(base | {"eval_deterministic": "no"})


@pytest.mark.parametrize(
    "seeds, match",
    [
        ([0, -1], r"Spec field seeds\[1\] must be a seed in 0\.\.4294967295, got -1"),
        ([0, 2**32], r"seeds\[1\] must be a seed in 0\.\.4294967295"),
        ([0, 1.5], r"seeds\[1\] must be an integer seed, got float 1.5"),
        ([True], r"seeds\[0\] must be an integer seed, got bool"),
        ([3, 1, 3], r"seeds\[2\] repeats seed 3"),
        ([], r"seeds must be a positive integer or a non-empty list"),
        (-2, r"seeds must be >= 1 \(a number of seeds"),
        (0, r"seeds must be >= 1"),
        (True, r"seeds must be a positive integer or a non-empty list"),
    ],
)
def test_bad_seeds_are_refused_at_load_naming_the_field(seeds, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(_with(seeds=seeds))
    with pytest.raises(SpecError, match=match.replace("Spec field seeds", r"Spec field tasks\[0\]\.seeds")):
        parse_spec(_with(tasks=[{"env": "Pendulum-v1", "seeds": seeds}]))
    assert [r.seed for r in parse_spec(_with(seeds=[9, 0, 4])).runs if r.method == "ppo"] == [9, 0, 4]


def test_a_spec_without_runs_is_refused_with_the_reasons():
    with pytest.raises(SpecError, match=r"Spec has no runs: its tasks list is empty\. Add a task"):
        parse_spec(_with(tasks=[]))
    # every method skipped on every task: each skip reason is given
    methods = {"dqn": {}, "bc": {}}
    with pytest.raises(SpecError, match="every method was skipped on every task") as e:
        parse_spec({"methods": methods, "tasks": ["Pendulum-v1", "MountainCarContinuous-v0"]})
    message = str(e.value)
    assert "dqn (dqn) cannot act in Pendulum-v1 (Box actions)" in message
    assert "dqn (dqn) cannot act in MountainCarContinuous-v0" in message
    assert "bc (bc) learns from a dataset, and Pendulum-v1 is an environment" in message
    assert "finished runs" not in message
