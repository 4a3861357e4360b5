import json

import gymnasium as gym
import numpy as np
import pytest

from gendm.core.checkpoint import find_checkpoint_dir, load_checkpoint
from gendm.core.errors import CheckpointError, ConfigError, TrainingDivergedError
from gendm.train import TrainSettings, train


def _settings(tmp_path, **kw):
    base = dict(
        algo="dqn",
        env_id="CartPole-v1",
        steps=1200,
        out_dir=tmp_path,
        eval_every=500,
        eval_episodes=2,
        log_every=200,
        progress=False,
        tensorboard=False,
        overrides={"learning_starts": 200},
    )
    return TrainSettings(**(base | kw))


def test_summary_contract_and_fixed_eval_cadence(tmp_path):
    s = train(_settings(tmp_path, tensorboard=True))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["final_return"] == s["final_return"] == s["curve"][-1]["return_mean"]
    for key in (
        "final_return",
        "env_steps",
        "grad_steps",
        "wall_s",
        "curve",
        "env_steps_per_s",
        "peak_rss_mb",
    ):
        assert key in on_disk
    assert [p["env_steps"] for p in s["curve"]] == [0, 500, 1000, 1200]
    assert s["env_steps"] == 1200 and s["grad_steps"] == 101  # train_freq 10 from env step 200
    assert s["eval_protocol"]["reported"] == "last checkpoint"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("losses/td" in r for r in rows) and any("eval/return_mean" in r for r in rows)
    assert list((tmp_path / "tb").iterdir())  # TensorBoard event file


def test_resume_continues_where_the_last_checkpoint_left_off(tmp_path):
    first = train(_settings(tmp_path, steps=600))
    resumed = train(_settings(tmp_path, steps=1200))
    assert resumed["curve"][: len(first["curve"])] == first["curve"]
    assert resumed["env_steps"] == 1200 and resumed["grad_steps"] == 101
    again = train(_settings(tmp_path, steps=1200))  # finished work is not redone
    assert again["curve"] == resumed["curve"] and again["grad_steps"] == resumed["grad_steps"]


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    train(_settings(tmp_path, steps=300))
    with pytest.raises(CheckpointError, match=r"different run.*config.learning_rate"):
        train(_settings(tmp_path, overrides={"learning_starts": 200, "learning_rate": 1e-3}))
    train(
        _settings(
            tmp_path, steps=300, resume=False, overrides={"learning_starts": 200, "learning_rate": 1e-3}
        )
    )


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    train(_settings(tmp_path, steps=300))
    w = find_checkpoint_dir(tmp_path / "checkpoint") / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        train(_settings(tmp_path, steps=600))


class NaNRewardEnv(gym.Env):
    """Pendulum-like toy whose reward turns NaN after 600 steps."""

    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        NaNRewardEnv.steps += 1
        reward = float("nan") if NaNRewardEnv.steps > 600 else -float(np.square(action).sum())
        return self.observation_space.sample(), reward, False, False, {}


gym.register("gendm-test/NaNReward-v0", entry_point=NaNRewardEnv, max_episode_steps=50)


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    NaNRewardEnv.steps = 0
    settings = _settings(
        tmp_path,
        algo="sac",
        env_id="gendm-test/NaNReward-v0",
        steps=3000,
        eval_every=300,
        eval_episodes=1,
        overrides={"learning_starts": 100, "batch_size": 32},
    )
    with pytest.raises(TrainingDivergedError, match=r"non-finite.*last good checkpoint"):
        train(settings)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        summary["status"] == "failed" and "non-finite" in summary["error"] and summary["final_return"] is None
    )
    state, _ = load_checkpoint(find_checkpoint_dir(tmp_path / "checkpoint"))
    assert 0 < state["loop"]["env_steps"] < 1000
    assert all(np.isfinite(v.numpy()).all() for v in state["agent"]["actor"].values())


class CrashingEnv(gym.Env):
    """Raises inside ``step`` after ``crash_at`` steps: a run that dies of a bug, not of divergence."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    crash_at = 400
    steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        CrashingEnv.steps += 1
        if CrashingEnv.steps > self.crash_at:
            raise RuntimeError("simulator crashed")
        return np.zeros(3, np.float32), 0.0, False, False, {}


gym.register("gendm-test/Crashing-v0", entry_point=CrashingEnv, max_episode_steps=50)


def test_a_crashed_run_is_failed_in_its_summary_not_ok(tmp_path):
    CrashingEnv.steps = 0
    settings = _settings(
        tmp_path,
        algo="sac",
        env_id="gendm-test/Crashing-v0",
        steps=1000,
        eval_every=200,
        eval_episodes=1,
        overrides={"learning_starts": 100, "batch_size": 32},
    )
    with pytest.raises(RuntimeError, match="simulator crashed"):
        train(settings)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["final_return"] is None
    assert summary["error"] == "RuntimeError: simulator crashed"


def test_algorithm_and_action_space_mismatch(tmp_path):
    with pytest.raises(ConfigError, match=r"needs a discrete action space.*Algorithms for it: .*sac"):
        train(_settings(tmp_path, env_id="Pendulum-v1"))


def test_interrupt_saves_a_checkpoint_at_the_current_step(tmp_path, monkeypatch):
    from gendm.train.online import OnlineTrainer

    original = OnlineTrainer._after_env_step

    def interrupt_at_700(self):
        original(self)
        if self.env_steps == 700:
            raise KeyboardInterrupt

    monkeypatch.setattr(OnlineTrainer, "_after_env_step", interrupt_at_700)
    with pytest.raises(KeyboardInterrupt):
        train(_settings(tmp_path))
    state, _ = load_checkpoint(find_checkpoint_dir(tmp_path / "checkpoint"))
    assert state["loop"]["env_steps"] == 700 and not (tmp_path / "summary.json").exists()
    monkeypatch.setattr(OnlineTrainer, "_after_env_step", original)
    resumed = train(_settings(tmp_path))
    assert resumed["env_steps"] == 1200 and [p["env_steps"] for p in resumed["curve"]] == [0, 500, 1000, 1200]


def test_stochastic_evaluation_is_seeded_and_leaves_training_rng_alone():
    import torch

    from gendm.envs import make_env
    from gendm.train import all_methods
    from gendm.train.evaluate import evaluate_episodes

    env = make_env("CartPole-v1", 2, seed=0)
    spec = all_methods().get("ppo")
    agent = spec.builder(spec.config_cls(), env.single_observation_space, env.single_action_space, "cpu")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = evaluate_episodes(agent, env, 6, seed=7, deterministic=False)
    after = torch.rand(1)
    b = evaluate_episodes(agent, env, 6, seed=7, deterministic=False)
    c = evaluate_episodes(agent, env, 6, seed=8, deterministic=False)
    d = evaluate_episodes(agent, env, 6, seed=7, deterministic=True)
    assert np.array_equal(a.returns, b.returns) and torch.equal(before, after)
    # an untrained PPO policy samples near-uniform actions: sampled and argmax episodes differ
    assert not np.array_equal(a.returns, c.returns) and not np.array_equal(a.returns, d.returns)


def test_eval_mode_is_recorded_and_part_of_the_run_identity(tmp_path):
    s = train(_settings(tmp_path, steps=600, eval_deterministic=False))
    assert s["eval_protocol"]["deterministic"] is False
    with pytest.raises(CheckpointError):
        train(_settings(tmp_path, steps=800))  # a deterministic-eval run must not resume it


def _flushes_subnormals() -> bool:
    import torch

    return bool((torch.tensor([1e-39]) * 1.0).item() == 0.0)  # 1e-39 is subnormal in fp32


def test_flush_denormals_context_sets_and_clears_the_cpu_flag():
    from gendm.core.device import flush_denormals

    assert not _flushes_subnormals()
    with flush_denormals():
        assert _flushes_subnormals()
    assert not _flushes_subnormals()
    with flush_denormals(enabled=False):
        assert not _flushes_subnormals()


@pytest.mark.parametrize("enabled", [True, False])
def test_training_updates_run_with_subnormals_flushed_unless_disabled(tmp_path, monkeypatch, enabled):
    from gendm.agents.dqn import DQN

    seen, update = [], DQN.update

    def observed_update(self, batch):
        seen.append(_flushes_subnormals())
        return update(self, batch)

    monkeypatch.setattr(DQN, "update", observed_update)
    s = train(_settings(tmp_path, steps=400, flush_denormals=enabled))
    assert seen and set(seen) == {enabled}
    assert s["flush_denormals"] is enabled
    assert not _flushes_subnormals()  # the flag does not outlive the run


def _interrupted_and_resumed(tmp_path, monkeypatch, at, **kw):
    """The run of ``_settings(**kw)`` interrupted at env step ``at`` and rerun to its end."""
    from gendm.train.online import OnlineTrainer

    original = OnlineTrainer._after_env_step

    def interrupt(self):
        original(self)
        if self.env_steps == at:
            raise KeyboardInterrupt

    monkeypatch.setattr(OnlineTrainer, "_after_env_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(_settings(tmp_path, **kw))
    monkeypatch.setattr(OnlineTrainer, "_after_env_step", original)
    return train(_settings(tmp_path, **kw))


@pytest.mark.parametrize(
    ("algo", "env_id", "overrides", "steps", "at"),
    [
        ("dqn", "CartPole-v1", {"learning_starts": 200}, 1200, 730),  # random warm-up, then epsilon
        ("ppo", "CartPole-v1", {"num_envs": 2, "num_steps": 64}, 1200, 730),  # mid-rollout
        ("sac", "Pendulum-v1", {"learning_starts": 200, "batch_size": 32}, 600, 430),
        ("td3", "Ant-v5", {"learning_starts": 100, "batch_size": 32}, 520, 330),  # MuJoCo
    ],
)
def test_an_interrupted_online_run_resumes_to_exactly_the_uninterrupted_run(
    tmp_path, monkeypatch, algo, env_id, overrides, steps, at
):
    """The training env's exact state (generators, simulator, time limit, episode statistics, the
    observations and a rollout in progress) is checkpointed, so a resumed run is the same run."""
    kw = {"algo": algo, "env_id": env_id, "overrides": overrides, "steps": steps}
    whole = train(_settings(tmp_path / "whole", **kw))
    resumed = _interrupted_and_resumed(tmp_path / "cut", monkeypatch, at, **kw)
    keys = ("env_steps", "grad_steps", "return_mean", "return_std")
    assert [[p[k] for k in keys] for p in resumed["curve"]] == [[p[k] for k in keys] for p in whole["curve"]]
    a, _ = load_checkpoint(find_checkpoint_dir(tmp_path / "whole" / "checkpoint"))
    b, _ = load_checkpoint(find_checkpoint_dir(tmp_path / "cut" / "checkpoint"))
    assert _leaves(a["agent"]) == _leaves(b["agent"])  # every weight and optimiser moment, bit for bit


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _leaves(value, f"{prefix}/{key}").items()}
    if isinstance(tree, list | tuple):
        return {k: v for i, value in enumerate(tree) for k, v in _leaves(value, f"{prefix}/{i}").items()}
    return {prefix: tree.numpy().tobytes() if hasattr(tree, "numpy") else tree}


def test_an_env_whose_state_is_not_captured_resumes_by_reseeding_and_says_so(tmp_path, monkeypatch):
    pytest.importorskip("minigrid")
    from gendm.envs.captioned import register_captioned

    env_id = register_captioned("MiniGrid-Empty-5x5-v0")
    kw = {"algo": "ppo", "env_id": env_id, "overrides": {"num_envs": 2, "num_steps": 64}, "steps": 400}
    with pytest.warns(UserWarning, match="reseeds it and will not equal an uninterrupted run"):
        resumed = _interrupted_and_resumed(tmp_path, monkeypatch, 200, **kw)
    assert resumed["status"] == "ok" and resumed["env_steps"] >= 400
