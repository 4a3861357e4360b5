"""Collecting datasets: `gendm data` end to end, scripted experts, checkpoint policies, replay buffers
turned into datasets, and the D4RL-style recipe on a tiny budget."""

import importlib.util
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch

from gendm.agents.loading import checkpoint_agent, checkpoint_policy
from gendm.cli import main
from gendm.core.checkpoint import load_checkpoint, save_checkpoint
from gendm.core.errors import CheckpointError, ConfigError, DataError, UnknownNameError
from gendm.data import load_dataset, save_dataset
from gendm.data.collect import (
    collect,
    make_perturbation,
    replay_buffer_dataset,
    steps_to_dataset,
)
from gendm.envs.experts import EXPERTS, expert_policy

ROOT = Path(__file__).resolve().parents[1]
TINY_SAC = [
    "--set",
    "learning_starts=100",
    "--set",
    "batch_size=64",
    "--eval-episodes",
    "1",
    "--threads",
    "1",
]


@pytest.fixture
def root(tmp_path, monkeypatch):
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    """A 300-step SAC run on Pendulum-v1 (one 200-step episode and a partial one in its buffer)."""
    out = tmp_path_factory.mktemp("sac")
    argv = [
        "train",
        "sac",
        "--env",
        "Pendulum-v1",
        "--steps",
        "300",
        "--eval-every",
        "300",
        "--out",
        str(out),
    ]
    assert main([*argv, "--no-progress", *TINY_SAC]) == 0
    return out


def test_collect_cli_random_cartpole(root, capsys):
    argv = ["data", "collect", "--env", "CartPole-v1", "--episodes", "3", "--out", "gendm/cartpole/random-v0"]
    assert main([*argv, "--seed", "1", "--no-progress"]) == 0
    assert "wrote gendm/cartpole/random-v0: " in capsys.readouterr().out
    ds = load_dataset("gendm/cartpole/random-v0")
    assert ds.num_episodes == 3 and ds.actions.dtype == np.int64
    assert ds.terminations[ds.episode_ends - 1].all()  # random CartPole always falls
    assert ds.metadata["provenance"]["policy"] == "random"
    assert ds.metadata["provenance"]["command"].startswith("gendm data collect --env CartPole-v1")
    assert minari.load_dataset("gendm/cartpole/random-v0").total_steps == len(ds)

    assert main(["data", "info", "gendm/cartpole/random-v0"]) == 0
    out = capsys.readouterr().out
    assert "episodes: 3" in out and "normalised:" in out and "actions per dimension" in out
    assert main(["data", "list"]) == 0
    assert "gendm/cartpole/random-v0" in capsys.readouterr().out
    assert main(["data", "info", "gendm/cartpole/randm-v0"]) == 2
    assert "Did you mean: gendm/cartpole/random-v0" in capsys.readouterr().err


def test_frozenlake_stores_integer_observations(root, capsys):
    argv = ["data", "collect", "--env", "FrozenLake-v1", "--policy", "random", "--episodes", "5"]
    assert main([*argv, "--out", "test/fl-v0", "--no-progress"]) == 0
    ds = load_dataset("test/fl-v0")
    assert ds.observations.dtype == ds.next_observations.dtype == np.int64 and ds.observations.ndim == 1
    assert ds.observations.min() >= 0 and ds.next_observations.max() < 16
    assert ds.observation_space == gym.spaces.Discrete(16) and ds.num_episodes == 5
    m = minari.load_dataset("test/fl-v0")
    assert m.observation_space == gym.spaces.Discrete(16)
    for i, episode in enumerate(m.iterate_episodes()):
        assert episode.observations.dtype == np.int64
        rows = slice(ds.episode_starts[i], ds.episode_ends[i])
        np.testing.assert_array_equal(episode.observations[:-1], ds.observations[rows])
    assert main(["data", "info", "test/fl-v0"]) == 0
    assert "episodes: 5" in capsys.readouterr().out
    # Discrete actions: a clear refusal naming the action space, not a crash on the observations
    assert main(["train", "bc", "--dataset", "test/fl-v0", "--out", str(root.parent / "run")]) == 2
    assert "has Discrete(4). No gendm offline algorithm learns this action space" in capsys.readouterr().err


@pytest.fixture
def int_pendulum():
    """Pendulum-v1 with int16 observations (x100) in an integer Box: Box actions, integer observations."""
    space = gym.spaces.Box(-1000, 1000, (3,), np.int16)

    def make(**kwargs):
        env = gym.make("Pendulum-v1", **kwargs)
        return gym.wrappers.TransformObservation(env, lambda o: np.round(o * 100).astype(np.int16), space)

    gym.register("GendmTest/IntPendulum-v0", entry_point=make, max_episode_steps=50)
    yield "GendmTest/IntPendulum-v0"
    gym.registry.pop("GendmTest/IntPendulum-v0")


def test_integer_box_observations_are_stored_loaded_and_trained_on(root, tmp_path, int_pendulum):
    from gendm.train import TrainSettings, train_offline

    ds = collect(int_pendulum, "random", episodes=2, seed=0, progress=False)
    assert ds.observations.dtype == np.int16 and len(ds) == 100
    save_dataset(ds, "test/intpendulum/random-v0")
    back = load_dataset("test/intpendulum/random-v0")
    assert back.observations.dtype == np.int16
    np.testing.assert_array_equal(back.observations, ds.observations)
    episode = next(iter(minari.load_dataset("test/intpendulum/random-v0").iterate_episodes()))
    assert episode.observations.dtype == np.int16
    settings = TrainSettings(
        algo="bc",
        dataset="test/intpendulum/random-v0",
        steps=5,
        eval_every=5,
        eval_episodes=1,
        out_dir=tmp_path / "run",
        progress=False,
        tensorboard=False,
        overrides={"hidden": (16,), "batch_size": 16},
    )
    summary = train_offline(settings)
    assert summary["status"] == "ok" and summary["grad_steps"] == 5 and np.isfinite(summary["final_return"])


def test_offline_training_refuses_discrete_observations_clearly(root, tmp_path):
    """Discrete observations with Box actions: stored as int64, and training says to one-hot them."""
    from gendm.train import TrainSettings, train_offline

    space = gym.spaces.Discrete(2)
    gym.register(
        "GendmTest/DiscretePendulum-v0",
        entry_point=lambda **kw: gym.wrappers.TransformObservation(
            gym.make("Pendulum-v1", **kw), lambda o: int(o[2] > 0), space
        ),
        max_episode_steps=20,
    )
    try:
        save_dataset(
            collect("GendmTest/DiscretePendulum-v0", episodes=1, progress=False), "test/dp/random-v0"
        )
        assert load_dataset("test/dp/random-v0").observations.dtype == np.int64
        settings = TrainSettings(
            algo="bc", dataset="test/dp/random-v0", out_dir=tmp_path / "run", progress=False
        )
        with pytest.raises(ConfigError, match=r"read Box observations.*Discrete\(2\).*FlattenObservation"):
            train_offline(settings)
    finally:
        gym.registry.pop("GendmTest/DiscretePendulum-v0")


def test_collect_refuses_dict_observations_before_any_work(root, capsys):
    """MiniGrid's Dict observations: a clear refusal before the policy is built or a step is taken."""
    pytest.importorskip("minigrid")
    argv = ["data", "collect", "--env", "MiniGrid-Empty-5x5-v0", "--episodes", "2", "--out", "test/mg-v0"]
    assert main([*argv, "--policy", "no/such/checkpoint", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gendm: error: MiniGrid-Empty-5x5-v0 has a Dict observation space")
    assert "Dict(direction: Discrete, image: Box, mission: MissionSpace)" in err
    assert "ImgObsWrapper" in err and "FlattenObservation" in err and "Traceback" not in err
    assert not root.exists() or not any(root.iterdir())


def test_following_the_dict_hint_collects_a_wrapped_env(root):
    pytest.importorskip("minigrid")
    from minigrid.wrappers import ImgObsWrapper

    # the hint's recipe: wrap, register under an own id, collect that id
    gym.register(
        "GendmTest/MiniGridImg-v0",
        entry_point=lambda **kw: ImgObsWrapper(gym.make("MiniGrid-Empty-5x5-v0", **kw)),
    )
    try:
        ds = collect("GendmTest/MiniGridImg-v0", "random", episodes=2, seed=0, progress=False)
        save_dataset(ds, "test/minigrid/img-v0")
    finally:
        gym.registry.pop("GendmTest/MiniGridImg-v0")
    back = load_dataset("test/minigrid/img-v0")
    assert back.observations.dtype == np.uint8 and back.observations.shape[1:] == (7, 7, 3)
    assert back.actions.dtype == np.int64 and back.num_episodes == 2
    m = minari.load_dataset("test/minigrid/img-v0")
    assert m.observation_space.dtype == next(iter(m.iterate_episodes())).observations.dtype == np.uint8


def test_collect_refuses_dict_observations_without_minigrid(root):
    space = gym.spaces.Dict({"x": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
    gym.register(
        "GendmTest/DictCartPole-v0",
        entry_point=lambda **kw: gym.wrappers.TransformObservation(
            gym.make("CartPole-v1", **kw), lambda o: {"x": o}, space
        ),
    )
    try:
        with pytest.raises(DataError, match=r"Dict observation space, Dict\(x: Box\).*FlattenObservation"):
            collect("GendmTest/DictCartPole-v0", "random", episodes=1, progress=False)
    finally:
        gym.registry.pop("GendmTest/DictCartPole-v0")


def test_float64_env_declares_the_stored_dtype(root):
    """InvertedPendulum-v5 (MuJoCo) emits float64 observations; the dataset stores and declares float32."""
    ds = collect("InvertedPendulum-v5", "random", episodes=2, seed=0, progress=False)
    assert gym.make("InvertedPendulum-v5").observation_space.dtype == np.float64
    save_dataset(ds, "test/invertedpendulum/random-v0")
    m = minari.load_dataset("test/invertedpendulum/random-v0")
    for episode in m.iterate_episodes():
        assert m.observation_space.dtype == episode.observations.dtype == np.float32
        assert m.action_space.dtype == episode.actions.dtype
        assert all(m.observation_space.contains(o) for o in episode.observations)
    assert load_dataset("test/invertedpendulum/random-v0").observation_space.dtype == np.float32


def test_collect_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "collect", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # independent of the terminal width
    assert "(default: random)" in text and "(default: 0.0)" in text and "--episodes EPISODES" in text


def test_collect_steps_truncates_last_episode(root):
    ds = collect("Pendulum-v1", "random", steps=250, seed=0, progress=False)
    assert len(ds) == 250
    np.testing.assert_array_equal(ds.episode_ends, [200, 250])
    assert ds.truncations[[199, 249]].all() and not ds.terminations.any()
    np.testing.assert_array_equal(ds.observations[1:200], ds.next_observations[:199])  # contiguous
    again = collect("Pendulum-v1", "random", steps=250, seed=0, progress=False)
    np.testing.assert_array_equal(again.actions, ds.actions)  # seeded


def test_expert_policies():
    ds = collect("CartPole-v1", "expert", episodes=2, seed=0, progress=False)
    np.testing.assert_array_equal(ds.episode_returns(), [500, 500])
    assert ds.truncations[ds.episode_ends - 1].all()
    with pytest.raises(UnknownNameError, match=r"Unknown expert policy 'Hopper-v5'.*CartPole-v1"):
        expert_policy("Hopper-v5")
    assert "Pendulum-v1" in EXPERTS


def test_collect_rolls_out_a_policy_callable():
    seen, resets = [], []

    def push_right(obs: np.ndarray) -> np.ndarray:
        seen.append(obs[0].copy())
        return np.ones(len(obs), np.int64)

    push_right.reset_episodes = lambda mask: resets.append(mask.copy())
    info = {"policy": "push-right"}
    ds = collect("CartPole-v1", push_right, episodes=2, seed=0, progress=False, policy_info=info)
    assert (ds.actions == 1).all() and ds.num_episodes == 2
    np.testing.assert_array_equal(np.stack(seen), ds.observations)  # it saw every recorded observation
    assert len(resets) == 2  # once per episode end
    assert ds.metadata["provenance"]["policy"] == "push-right"
    assert "push-right policy" in ds.metadata["description"]


def test_only_an_agents_checkpoint_rebuilds_into_a_policy(tmp_path):
    import gendm.language_agents.methods  # noqa: F401  (registers react, a method that is no agent)

    meta = {"algo": "react", "config": {}, "env_id": "CartPole-v1"}
    save_checkpoint(tmp_path / "checkpoint", {"agent": {"w": torch.zeros(1)}}, meta)
    with pytest.raises(CheckpointError, match=r"of a react run \(language_agent\), not of an agent"):
        checkpoint_agent(tmp_path)


def test_collect_takes_no_checkpoint_directory_and_says_how(tmp_path):
    # data sits below agents: a run directory is rebuilt into a policy by gendm.agents.loading first
    with pytest.raises(ConfigError, match=r"gendm\.agents\.loading\.checkpoint_policy\("):
        collect("CartPole-v1", str(tmp_path), episodes=1, progress=False)


def test_perturbation():
    space = gym.spaces.Box(-2.0, 2.0, (3,), np.float32)
    rng = np.random.default_rng(0)
    a = np.zeros((1000, 3), np.float32)
    noisy = make_perturbation(space, 0.1, 0.0, rng, space.sample)
    np.testing.assert_allclose(noisy(a).std(), 0.2, rtol=0.05)  # std 0.1 in [-1, 1] units is 0.2 here
    edge = noisy(a + 1.9)
    assert edge.max() == 2.0 and edge.min() > 1.2  # clipped to the bounds
    assert make_perturbation(space, 0.0, 0.0, rng, space.sample)(a) is a
    discrete = gym.spaces.MultiDiscrete([2] * 1000, seed=0)
    flips = make_perturbation(gym.spaces.Discrete(2), 0.0, 0.5, rng, discrete.sample)(
        np.zeros(1000, np.int64)
    )
    assert 0.15 < flips.mean() < 0.35  # half are replaced, half of those by 1
    with pytest.raises(ConfigError, match="--noise needs a Box"):
        collect("CartPole-v1", "random", episodes=1, noise=0.1, progress=False)


def test_collect_from_checkpoint(root, sac_run, capsys):
    for policy in (str(sac_run), str(sac_run / "checkpoint")):
        argv = ["data", "collect", "--env", "Pendulum-v1", "--policy", policy, "--episodes", "1"]
        assert main([*argv, "--out", "gendm/pendulum/sac-v0", "--overwrite", "--no-progress"]) == 0
    ds = load_dataset("gendm/pendulum/sac-v0")
    assert len(ds) == 200 and ds.metadata["provenance"]["algo"] == "sac"
    assert ds.metadata["provenance"]["checkpoint_env_steps"] == 300
    # deterministic: the recorded actions are the checkpoint agent's actions on the recorded observations
    act, _ = checkpoint_policy(sac_run)
    np.testing.assert_allclose(act(ds.observations), ds.actions, atol=1e-6)

    argv = ["data", "collect", "--env", "CartPole-v1", "--policy", str(sac_run), "--episodes", "1"]
    assert main([*argv, "--out", "gendm/cartpole/x-v0"]) == 2
    assert "trained on Pendulum-v1, not CartPole-v1" in capsys.readouterr().err


def test_replay_buffer_dataset(root, sac_run):
    ds = replay_buffer_dataset(sac_run)
    state, _ = load_checkpoint(sac_run / "checkpoint")
    np.testing.assert_array_equal(ds.observations, state["buffer"]["obs"].numpy())
    np.testing.assert_array_equal(ds.episode_ends, [200, 300])
    assert ds.truncations[199] and ds.truncations[299]  # a time limit, then the run's partial episode
    assert not state["buffer"]["truncations"][299]
    save_dataset(ds, "gendm/pendulum/medium-replay-v0")  # contiguous episodes, so Minari can hold it
    assert minari.load_dataset("gendm/pendulum/medium-replay-v0").total_episodes == 2


def test_steps_to_dataset_deinterleaves_envs():
    # Two envs, 5 steps: env 0 ends an episode at step 1, env 1 at step 3; both are cut at step 4.
    t, e = np.meshgrid(np.arange(5), np.arange(2), indexing="ij")
    row_id = (t * 10 + e).reshape(-1).astype(np.float32)  # step-major: row = t * 2 + e
    ended = {(1, 0), (3, 1)}
    term = np.array([(ti, ei) in ended for ti, ei in zip(t.reshape(-1), e.reshape(-1))])
    steps = {
        "observations": row_id[:, None],
        "actions": row_id[:, None],
        "rewards": row_id,
        "next_observations": row_id[:, None] + 10,
        "terminations": term,
        "truncations": np.zeros(10, bool),
    }
    ds = steps_to_dataset(steps, "Pendulum-v1", num_envs=2)
    np.testing.assert_array_equal(ds.rewards, [0, 10, 20, 30, 40, 1, 11, 21, 31, 41])
    np.testing.assert_array_equal(ds.episode_ends, [2, 5, 9, 10])
    np.testing.assert_array_equal(np.flatnonzero(ds.terminations), [1, 8])
    np.testing.assert_array_equal(np.flatnonzero(ds.truncations), [4, 9])
    wrapped = steps_to_dataset(steps, "Pendulum-v1", num_envs=2, drop_leading_fragment=True)
    np.testing.assert_array_equal(wrapped.rewards, [20, 30, 40, 41])


def test_replay_buffer_of_a_wrapped_two_env_run(root, tmp_path):
    out = tmp_path / "run"
    argv = [
        "train",
        "sac",
        "--env",
        "Pendulum-v1",
        "--steps",
        "500",
        "--eval-every",
        "500",
        "--out",
        str(out),
    ]
    extra = ["--set", "num_envs=2", "--set", "buffer_size=128"]
    assert main([*argv, "--no-progress", *TINY_SAC, *extra]) == 0
    ds = replay_buffer_dataset(out)
    # Each env stepped 250 times: steps 0-199 are its first episode, 200-249 the unfinished second.
    # The ring kept each env's last 64 steps (186-249); steps 186-199 lost their episode's start and
    # are dropped, so each env contributes steps 200-249, marked truncated at its end.
    np.testing.assert_array_equal(ds.episode_ends, [50, 100])
    assert ds.truncations[[49, 99]].all() and ds.truncations.sum() == 2
    state, _ = load_checkpoint(out / "checkpoint")
    stored = {tuple(row) for row in state["buffer"]["obs"].numpy()}
    assert all(tuple(row) in stored for row in ds.observations)
    save_dataset(ds, "gendm/pendulum/wrapped-v0")  # contiguous within each episode


def test_recipe_tiny_budget(root, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("recipe", ROOT / "benchmarks" / "make_offline_datasets.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    argv = [
        "--env",
        "Pendulum-v1",
        "--medium-steps",
        "300",
        "--expert-steps",
        "400",
        "--dataset-steps",
        "250",
    ]
    argv += [
        "--eval-every",
        "1000",
        "--eval-episodes",
        "1",
        "--run-dir",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    argv += ["--set", "learning_starts=100", "--set", "batch_size=64", "--threads", "1"]
    datasets = recipe.main(argv)
    out = capsys.readouterr().out
    for kind in recipe.KINDS:
        assert f"gendm/pendulum/{kind}-v0" in out
        assert minari.load_dataset(f"gendm/pendulum/{kind}-v0").total_steps == len(datasets[kind])
    assert len(datasets["medium-replay"]) == 300  # the buffer at the medium budget
    assert len(datasets["medium-expert"]) == 500
    medium = load_dataset("gendm/pendulum/medium-v0").metadata["provenance"]
    expert = load_dataset("gendm/pendulum/expert-v0").metadata["provenance"]
    assert (medium["checkpoint_env_steps"], expert["checkpoint_env_steps"]) == (300, 400)
    assert recipe.main(argv) is not None  # a rerun resumes: nothing is retrained or rewritten
    assert "wrote" not in capsys.readouterr().out
