"""The one method registry and the one trainer skeleton: every family is looked up in
``gendm.core.methods.METHODS`` and trained by ``gendm.train.train``. The example methods in
``tests/example_methods`` (an online, an offline and a fine-tuning method, each one file that registers
itself) train, list, show their help and enter bench specs with no edit anywhere else."""

from __future__ import annotations

import gymnasium as gym
import pytest
from example_methods import linear_bc, linear_q, tabular_rloo  # noqa: F401  (registration)

from gendm.bench.spec import parse_spec
from gendm.cli import _algo_help, main
from gendm.core.errors import ConfigError, SpecError, UnknownNameError
from gendm.core.methods import (
    FAMILIES,
    METHODS,
    Method,
    TaskInfo,
    accepting,
    register_family,
    run_option_problem,
)
from gendm.train import TrainSettings, all_methods, make_trainer, settings_for_task, train

EXAMPLES = {"linear_q": "off_policy", "linear_bc": "offline", "tabular_rloo": "lm_finetune"}


def _settings(tmp_path, algo, name="run", **kw):
    kw = {"steps": 200, "eval_every": 100, "eval_episodes": 2, "progress": False, "tensorboard": False} | kw
    return TrainSettings(algo, out_dir=tmp_path / name, **kw)


# ------------------------------------------------------------------------------------- the registry
def test_every_package_method_is_registered_with_a_known_family():
    methods = all_methods()
    expected = {"sac", "td3", "dqn", "ppo", "iql", "bc", "td3bc", "react", "stateact", "react+q", "loop"}
    assert expected <= set(methods)
    assert all(m.family in FAMILIES for _, m in methods.items())
    assert {methods.get(n).family for n in ("sac", "ppo", "iql", "react", "loop")} == {
        "off_policy", "on_policy", "offline", "language_agent", "lm_finetune",
    }  # fmt: skip
    with pytest.raises(UnknownNameError, match="Did you mean: sac"):
        METHODS.get("sca")


def test_a_method_of_an_unknown_family_is_refused_and_families_can_be_added():
    with pytest.raises(ValueError, match="unknown family 'model_basd'"):
        Method("x", "model_basd", object, object, "x", lambda task: None)
    register_family("_test_family", "a family added by a test")
    try:
        assert Method("x", "_test_family", object, object, "x", lambda task: None).family == "_test_family"
        with pytest.raises(ValueError, match="registered twice"):
            register_family("_test_family", "again")
    finally:
        del FAMILIES["_test_family"]


def test_task_info_makes_its_spaces_once_and_only_when_asked():
    calls = []

    def load():
        calls.append(1)
        return gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2)

    task = TaskInfo("env", "X-v0", load)
    assert calls == []
    assert isinstance(task.action_space, gym.spaces.Discrete) and task.observation_space.shape == (3,)
    assert calls == [1]
    assert TaskInfo("text_task", "text:addition").action_space is None
    with pytest.raises(ValueError, match="kind"):
        TaskInfo("game", "x")


def test_accepts_decides_where_each_family_runs():
    discrete = TaskInfo("env", "CartPole-v1", lambda: (gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2)))
    assert {"dqn", "ppo", "linear_q"} <= set(accepting(discrete))
    assert not {"sac", "iql", "react", "loop", "linear_bc"} & set(accepting(discrete))
    assert set(accepting(TaskInfo("text_task", "text:addition"))) >= {"loop", "tabular_rloo"}
    assert "tabular_rloo" not in accepting(TaskInfo("dataset", "d"))
    sac = METHODS.get("sac")
    assert sac.accepts(discrete) == "cannot act in CartPole-v1 (Discrete actions)"
    assert sac.accepts(TaskInfo("dataset", "d")) == "is an online algorithm, and d is a dataset"
    assert METHODS.get("iql").accepts(TaskInfo("env", "Pendulum-v1")).startswith("learns from a dataset")


def test_run_options_a_method_does_not_take_are_named():
    m = METHODS.get
    assert run_option_problem(m("sac"), intrinsic=True) is None
    assert run_option_problem(m("iql"), intrinsic=True)[0] == "intrinsic"
    assert run_option_problem(m("react"))[0] == "backend"  # required
    assert run_option_problem(m("loop")) is None  # optional: the tiny model
    key, what = run_option_problem(m("loop"), backend="openai:http://h/v1#m")
    assert key == "backend" and "local model directory" in what
    key, what = run_option_problem(m("ppo"), backend="hf:/m")
    assert key == "backend" and what.startswith("ppo is no language method")
    assert run_option_problem(m("react"), backend="hf:/m", backend_options=True) is None
    assert "loads its model itself" in run_option_problem(m("loop"), backend_options=True)[1]


# ----------------------------------------------------------------------- the examples: one file each
def test_example_methods_are_listed_and_described_by_the_cli(capsys):
    assert main(["list", "algos"]) == 0
    out = capsys.readouterr().out
    for name, family in EXAMPLES.items():
        assert name in out and METHODS.get(name).family == family
    assert "epsilon=0.1" in _algo_help(["train", "linear_q", "--help"])
    assert "group_size=4" in _algo_help(["train", "tabular_rloo", "--help"])


def test_example_online_method_trains_through_train(tmp_path):
    s = train(_settings(tmp_path, "linear_q", env_id="CartPole-v1", steps=300, eval_every=150))
    assert s["status"] == "ok" and s["step_unit"] == "env_steps"
    assert [p["env_steps"] for p in s["curve"]] == [0, 150, 300]
    assert s["grad_steps"] == 300 - 63  # one update per env step from learning_starts (64) on
    with pytest.raises(ConfigError, match="needs a discrete action space, but Pendulum-v1"):
        train(_settings(tmp_path, "linear_q", "pendulum", env_id="Pendulum-v1"))


def test_example_offline_method_trains_through_train(tmp_path, monkeypatch):
    from gendm.data.collect import collect
    from gendm.data.minari_io import save_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    save_dataset(collect("Pendulum-v1", "random", steps=400, progress=False), "test/pendulum/random-v0")
    s = train(_settings(tmp_path, "linear_bc", dataset="test/pendulum/random-v0", steps=200))
    assert s["status"] == "ok" and s["step_unit"] == "grad_steps" and s["grad_steps"] == 200
    assert s["env_id"] == "Pendulum-v1" and s["dataset_transitions"] == 400
    # the bench spec places it by its accepts: on the dataset, not on the environment
    spec = parse_spec(
        {
            "seeds": 1,
            "methods": {"linear_bc": {}, "linear_q": {}},
            "tasks": [{"dataset": "test/pendulum/random-v0"}, {"env": "CartPole-v1"}],
        }
    )
    assert {(r.algo, r.task) for r in spec.runs} == {
        ("linear_bc", "test/pendulum/random-v0"),
        ("linear_q", "CartPole-v1"),
    }
    assert settings_for_task("linear_bc", "test/pendulum/random-v0").dataset == "test/pendulum/random-v0"


def test_example_fine_tuner_trains_and_resumes_exactly(tmp_path):
    s = train(_settings(tmp_path, "tabular_rloo", "whole", text_task="addition", steps=30, eval_every=10))
    assert s["status"] == "ok" and s["step_unit"] == "iterations" and s["env_id"] == "text:addition"
    success = [p["success_rate"] for p in s["curve"]]
    assert [p["iterations"] for p in s["curve"]] == [0, 10, 20, 30]
    assert success[-1] > success[0] + 0.05, success  # uniform (1/9) at the start
    assert s["env_steps"] == 30 * 25 * 4 and s["grad_steps"] == 30
    first = train(_settings(tmp_path, "tabular_rloo", "cut", text_task="addition", steps=20, eval_every=10))
    rest = train(_settings(tmp_path, "tabular_rloo", "cut", text_task="addition", steps=30, eval_every=10))
    assert first["resumed_at"] is None and rest["resumed_at"] == 20
    assert [p["return_mean"] for p in rest["curve"]] == [p["return_mean"] for p in s["curve"]]
    assert rest["reward_curve"] == s["reward_curve"]
    with pytest.raises(SpecError, match=r"methods\.tabular_rloo\.set: .*group_size"):
        parse_spec(
            {"methods": {"tabular_rloo": {"set": {"group_size": 1}}}, "tasks": [{"text_task": "addition"}]}
        )


# ------------------------------------------------------------------------ one skeleton, any family
def test_trainers_refuse_tasks_of_another_family(tmp_path):
    with pytest.raises(ConfigError, match="fine-tunes a language model on a text task"):
        make_trainer(_settings(tmp_path, "loop", text_task="nope"))
    with pytest.raises(ConfigError, match="learns by interacting with an environment, not on text task"):
        make_trainer(_settings(tmp_path, "ppo", text_task="addition"))
    with pytest.raises(ConfigError, match="prompts a language model"):
        make_trainer(_settings(tmp_path, "react", env_id="BabyAI-GoToRedBallNoDists-v0"))
    with pytest.raises(ConfigError, match="is a language agent, and 'CartPole-v1' is not a text environment"):
        make_trainer(_settings(tmp_path, "react", env_id="CartPole-v1", backend="hf:/m"))
