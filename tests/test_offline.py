"""The multimodal imitation env, the offline training loop (summary contract, resume, divergence stop),
the evaluation hooks, and offline runs through the CLI and the bench."""

import json
import warnings

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from conftest import minari_episode_buffers

from gendm.agents.bc import BC, BCConfig
from gendm.bench.report import task_reference
from gendm.bench.spec import parse_spec
from gendm.bench.store import Store
from gendm.bench.worker import execute
from gendm.cli import main
from gendm.core.checkpoint import find_checkpoint_dir, load_checkpoint
from gendm.core.errors import CheckpointError, ConfigError, DataError, SpecError, TrainingDivergedError
from gendm.data.collect import collect
from gendm.data.minari_io import load_dataset, save_dataset
from gendm.envs import make_env
from gendm.envs.experts import expert_policy
from gendm.envs.multimodal import OBSTACLE_RADIUS, TwoPathExpert
from gendm.envs.references import SUITES, reference
from gendm.train import TrainSettings, train, train_offline
from gendm.train.evaluate import evaluate_episodes
from gendm.train.offline import OfflineTrainer

ENV = "gendm/TwoPathReach-v0"
DATASET_ID = "gendm-test/twopath/expert-v0"


@pytest.fixture(scope="module")
def expert_data():
    return collect(ENV, "expert", episodes=20, seed=0, progress=False, command="pytest")


@pytest.fixture
def data_root(tmp_path, monkeypatch, expert_data):
    root = tmp_path / "datasets"
    save_dataset(expert_data, DATASET_ID, root=root)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _settings(tmp_path, **kw):
    base = dict(
        algo="bc",
        steps=300,
        out_dir=tmp_path / "run",
        eval_every=100,
        eval_episodes=2,
        log_every=50,
        progress=False,
        tensorboard=False,
        overrides={"hidden": (32, 32), "batch_size": 64},
    )
    return TrainSettings(**(base | kw))


# ----------------------------------------------------------------------------------- environment
def _run_episode(env, policy, rng, seed):
    obs, _ = env.reset(seed=seed)
    while True:
        obs, reward, term, trunc, info = env.step(policy(obs[None], rng)[0])
        if term or trunc:
            return reward, term, trunc, info


def test_straight_line_hits_the_obstacle_and_ends_as_a_failure():
    env = gym.make(ENV)
    obs, info = env.reset(seed=0)
    assert obs.shape == (2,) and not info["is_success"]
    for t in range(100):  # noqa: B007 (t is checked after the loop)
        obs, reward, term, trunc, info = env.step(np.array([0.0, 1.0], np.float32))
        if term:
            break
    assert term and not trunc and reward == 0.0 and not info["is_success"]
    assert np.hypot(obs[0], obs[1]) < OBSTACLE_RADIUS and t < 5


def test_the_current_carries_the_point_upward_so_missing_the_goal_times_out():
    env = gym.make(ENV)
    env.reset(seed=0)
    obs, *_ = env.step(np.array([0.0, -1.0], np.float32))  # slowest forward is still forward
    assert obs[1] > -0.36 + 0.02
    reward, term, trunc, info = _run_episode(env, lambda obs, rng: np.array([[1.0, -1.0]]), None, seed=0)
    assert trunc and not term and reward == 0.0 and not info["is_success"] and info["side"] == 1


def test_expert_succeeds_and_picks_each_side_half_of_the_time():
    env, expert, rng = gym.make(ENV), expert_policy(ENV), np.random.default_rng(0)
    results = [_run_episode(env, expert, rng, seed=i) for i in range(200)]
    assert np.mean([info["is_success"] for _, _, _, info in results]) > 0.9
    assert all(r == 1.0 for r, term, _, info in results if info["is_success"] and term)
    right = np.mean([info["side"] == 1 for *_, info in results])
    left = np.mean([info["side"] == -1 for *_, info in results])
    assert 0.4 < right < 0.6 and 0.4 < left < 0.6 and left + right == 1.0


def test_one_sided_expert_takes_one_side():
    env, rng = gym.make(ENV), np.random.default_rng(0)
    sides = {_run_episode(env, TwoPathExpert(side=-1), rng, seed=i)[3]["side"] for i in range(20)}
    assert sides == {-1}


def test_imitation_suite_has_measured_references():
    assert SUITES["imitation"] == (ENV,)
    ref = reference(ENV)
    assert (ref.random_return, ref.expert_return) == (0.0, 1.0)
    assert "--expert" in ref.expert_source and ref.random_source.startswith("measured by gendm")


# ------------------------------------------------------------------------------------ evaluation
class _Scripted:
    """Drives ``evaluate_episodes`` with a scripted policy and records the ``reset_episodes`` calls."""

    device = torch.device("cpu")

    def __init__(self, policy):
        self.policy, self.rng, self.resets = policy, np.random.default_rng(0), []

    def act(self, obs, deterministic=True):
        return torch.as_tensor(self.policy(obs.numpy(), self.rng))

    def reset_episodes(self, mask):
        self.resets.append(np.array(mask))


def test_evaluate_reports_success_and_tells_the_agent_when_episodes_start():
    env = make_env(ENV, 3, seed=0)
    agent = _Scripted(TwoPathExpert())
    result = evaluate_episodes(agent, env, 7, seed=0)
    assert result.success_rate == 1.0 and len(result.returns) == 7
    assert agent.resets[0].tolist() == [True, True, True]
    assert sum(int(m.sum()) for m in agent.resets[1:]) >= 7  # one start per finished episode
    crash = evaluate_episodes(_Scripted(lambda obs, rng: np.tile([0.0, 1.0], (len(obs), 1))), env, 3, 0)
    assert crash.success_rate == 0.0 and crash.returns.tolist() == [0.0, 0.0, 0.0]


def test_evaluate_without_is_success_reports_none():
    env = make_env("Pendulum-v1", 1, seed=0)
    agent = _Scripted(lambda obs, rng: np.zeros((len(obs), 1), np.float32))
    result = evaluate_episodes(agent, env, 1, seed=0)
    assert result.success_rate is None and result.successes is None


# -------------------------------------------------------------------------------- offline trainer
def test_offline_summary_contract(tmp_path, expert_data):
    s = train_offline(_settings(tmp_path, tensorboard=True), dataset=expert_data)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["final_return"] == s["final_return"] == s["curve"][-1]["return_mean"]
    assert s["env_steps"] == 0 and s["grad_steps"] == 300 and s["step_unit"] == "grad_steps"
    assert s["dataset_transitions"] == len(expert_data) and s["env_id"] == ENV
    assert [p["grad_steps"] for p in s["curve"]] == [0, 100, 200, 300]
    assert s["success_rate"] == s["curve"][-1]["success_rate"]
    assert s["final_score"] == pytest.approx(s["final_return"])  # references 0 (random) and 1 (expert)
    assert s["reference"]["expert"] == 1.0 and s["train_s"] <= s["wall_s"]
    protocol = s["eval_protocol"]
    assert protocol["reported"] == "last checkpoint" and protocol["every_unit"] == "grad_steps"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("losses/nll" in r and "grad_steps" in r for r in rows)
    assert any("eval/success_rate" in r for r in rows)
    assert list((tmp_path / "run" / "tb").iterdir())


def test_offline_resume_continues_and_refuses_another_dataset(tmp_path, expert_data):
    first = train_offline(_settings(tmp_path, steps=200), dataset=expert_data)
    resumed = train_offline(_settings(tmp_path, steps=300), dataset=expert_data)
    assert resumed["curve"][: len(first["curve"])] == first["curve"] and resumed["grad_steps"] == 300
    state, _ = load_checkpoint(find_checkpoint_dir(tmp_path / "run" / "checkpoint"))
    assert state["agent"]["num_updates"] == 300 and "generator" in state["sampler"]
    half = expert_data.select_episodes(range(10))
    with pytest.raises(CheckpointError, match="dataset_transitions"):
        train_offline(_settings(tmp_path, steps=300), dataset=half)


def test_offline_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, expert_data):
    settings = _settings(tmp_path, steps=1000, overrides={"hidden": (32, 32), "learning_rate": 1e30})
    with pytest.raises(TrainingDivergedError, match=r"gradient step .*last good checkpoint"):
        train_offline(settings, dataset=expert_data)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["final_return"] is None
    state, _ = load_checkpoint(find_checkpoint_dir(tmp_path / "run" / "checkpoint"))
    assert all(torch.isfinite(v).all() for v in state["agent"]["policy"].values())


def test_offline_and_online_algorithms_refuse_the_wrong_source(tmp_path, expert_data):
    with pytest.raises(ConfigError, match=r"bc learns from a dataset: pass --dataset"):
        train(_settings(tmp_path, env_id=ENV))
    with pytest.raises(ConfigError, match=r"sac is an online .* Drop --dataset.*iql"):
        train(_settings(tmp_path, algo="sac", env_id="Pendulum-v1", dataset="gendm/any-v0"))
    with pytest.raises(ConfigError, match=r"sac learns by interacting.*--env"):
        train(_settings(tmp_path, algo="sac"))
    with pytest.raises(DataError, match=r"observations \(2,\).*Pendulum-v1 has observations \(3,\)"):
        train_offline(_settings(tmp_path, env_id="Pendulum-v1"), dataset=expert_data)


# ------------------------------------------------------------ evaluation env recorded in the dataset
PENDULUM_MIN_REWARD = -(np.pi**2 + 0.1 * 8**2 + 0.001 * 2**2)  # Pendulum-v1's worst step


def _random_episodes(env, episodes):
    env.action_space.seed(0)
    for ep in range(episodes):
        env.reset(seed=ep)
        while True:
            *_, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                break


def _tiny_run(tmp_path, dataset, name="run"):
    overrides = {"hidden": (16,), "batch_size": 16}
    run = dict(steps=5, eval_every=5, eval_episodes=2, out_dir=tmp_path / name, overrides=overrides)
    trainer = OfflineTrainer(_settings(tmp_path, dataset=dataset, **run))
    return trainer, trainer.run()


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def test_offline_evaluates_in_the_env_minaris_data_collector_recorded(tmp_path, minari_root):
    pytest.importorskip("jax", reason="minari's DataCollector needs jax (minari[create])")
    env = minari.DataCollector(gym.make("Pendulum-v1", max_episode_steps=30, g=5.0))
    _random_episodes(env, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari warns about every missing optional field
        env.create_dataset(dataset_id="test/pendulum/collector-v0", algorithm_name="random")
    trainer, s = _tiny_run(tmp_path, "test/pendulum/collector-v0")
    assert s["eval_env"] == {
        "id": "Pendulum-v1",
        "max_episode_steps": 30,
        "kwargs": {"g": 5.0},
        "additional_wrappers": [],
        "source": "dataset metadata (env_spec)",
    }
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["eval_env"] == s["eval_env"]
    result = evaluate_episodes(trainer.agent, trainer.eval_env, 3, seed=0)
    assert result.lengths.tolist() == [30, 30, 30]  # not Pendulum-v1's registered 200
    assert trainer.eval_env.envs[0].unwrapped.g == 5.0
    assert s["final_return"] >= 30 * PENDULUM_MIN_REWARD - 1e-6


def test_offline_prefers_the_eval_env_spec_and_gendm_copies_keep_the_spec(tmp_path, minari_root):
    collect_env = gym.make("Pendulum-v1", max_episode_steps=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            "test/pendulum/buffers-v0",
            minari_episode_buffers(collect_env, 3),
            env=collect_env,
            eval_env=gym.make("Pendulum-v1", max_episode_steps=40),
        )
    trainer, s = _tiny_run(tmp_path, "test/pendulum/buffers-v0")
    assert s["eval_env"]["max_episode_steps"] == 40
    assert s["eval_env"]["source"] == "dataset metadata (eval_env_spec)"
    assert evaluate_episodes(trainer.agent, trainer.eval_env, 2, seed=0).lengths.tolist() == [40, 40]

    # a gendm-written copy keeps the recorded specs; without eval_env_spec the env_spec's limit holds
    ds = load_dataset("test/pendulum/buffers-v0")
    save_dataset(ds, "test/pendulum/copy-v0")
    assert minari.load_dataset("test/pendulum/copy-v0").recover_environment().spec.max_episode_steps == 30
    del ds.metadata["eval_env_spec"]
    save_dataset(ds, "test/pendulum/copy-v1")
    trainer, s = _tiny_run(tmp_path, "test/pendulum/copy-v1", name="copy")
    assert (
        s["eval_env"]["max_episode_steps"] == 30 and s["eval_env"]["source"] == "dataset metadata (env_spec)"
    )
    assert evaluate_episodes(trainer.agent, trainer.eval_env, 1, seed=0).lengths.tolist() == [30]


def test_offline_eval_env_without_a_recorded_spec_is_the_registered_one(tmp_path, expert_data):
    s = train_offline(_settings(tmp_path, steps=5, eval_every=5, eval_episodes=1), dataset=expert_data)
    assert (
        s["eval_env"]["id"] == ENV and s["eval_env"]["max_episode_steps"] == gym.spec(ENV).max_episode_steps
    )
    assert s["eval_env"]["source"].startswith("gymnasium registry")


def test_bc_act_and_checkpoint_roundtrip(expert_data):
    env = make_env(ENV, 1)
    agent = BC(BCConfig(hidden=(16,)), env.single_observation_space, env.single_action_space, "cpu")
    agent.prepare(expert_data)
    agent.update(agent.make_sampler(expert_data, torch.device("cpu"), 0).sample(32))
    clone = BC(BCConfig(hidden=(16,)), env.single_observation_space, env.single_action_space, "cpu")
    clone.load_state_dict(agent.state_dict())
    obs = torch.as_tensor(expert_data.observations[:5])
    assert torch.equal(agent.act(obs, deterministic=True), clone.act(obs, deterministic=True))
    assert agent.act(obs).abs().max() <= 1.0


# ------------------------------------------------------------------------------------ CLI, bench
def test_cli_trains_an_offline_algorithm_on_a_named_dataset(tmp_path, data_root, capsys):
    out = tmp_path / "cli"
    args = ["train", "bc", "--dataset", DATASET_ID, "--steps", "100", "--eval-every", "50"]
    args += ["--eval-episodes", "2", "--out", str(out), "--no-progress", "--set", "hidden=32,32"]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["dataset"] == DATASET_ID and s["env_id"] == ENV and s["grad_steps"] == 100
    printed = capsys.readouterr().out
    assert "100 gradient steps on" in printed and "success rate" in printed
    assert main(["train", "iql", "--env", ENV, "--out", str(out)]) == 2
    assert "pass --dataset" in capsys.readouterr().err
    assert main(["train", "td3bc", "--dataset", "gendm-test/twopath/expret-v0", "--out", str(out)]) == 2
    assert "Did you mean: gendm-test/twopath/expert-v0" in capsys.readouterr().err


def test_bench_spec_with_a_dataset_task_runs_offline(tmp_path, data_root):
    spec = parse_spec(
        {
            "seeds": 1,
            "steps": 100,
            "eval_every": 50,
            "eval_episodes": 2,
            "methods": {"bc": {"set": {"hidden": [32, 32]}}, "sac": {}},
            "tasks": [{"dataset": DATASET_ID}, {"env": "Pendulum-v1"}],
        }
    )
    assert [(r.method, r.task) for r in spec.runs] == [("bc", DATASET_ID), ("sac", "Pendulum-v1")]
    assert any("sac (sac) is an online algorithm" in s for s in spec.skipped)
    assert any("bc (bc) learns from a dataset" in s for s in spec.skipped)
    with pytest.raises(SpecError, match=r"tasks\[0\].methods: sac \(sac\) is an online"):
        parse_spec({"methods": {"sac": {}}, "tasks": [{"dataset": DATASET_ID, "methods": ["sac"]}]})
    with pytest.raises(SpecError, match=r"tasks\[0\].dataset: Unknown dataset"):
        parse_spec({"methods": {"bc": {}}, "tasks": [{"dataset": "gendm-test/none-v0"}]})

    run = spec.runs[0]
    summary = execute(run, tmp_path / "run")
    assert summary["status"] == "ok" and summary["grad_steps"] == 100 and summary["dataset"] == DATASET_ID
    store = Store(tmp_path / "results.sqlite")
    store.add_runs([run])
    store.mark_done(run.run_id, summary)
    (record,) = store.records()
    assert [s for s, _ in record.curve] == [0, 50, 100]  # keyed by gradient steps
    assert task_reference(DATASET_ID) == (0.0, 1.0)  # the dataset's ref_min_score / ref_max_score
