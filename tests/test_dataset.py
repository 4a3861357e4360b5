"""Offline datasets: Minari format round trips, validation errors, statistics, normalisation, windows
and samplers."""

import json
import re
import warnings

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
import torch
from conftest import minari_episode_buffers

import gendm
from gendm.cli import main
from gendm.core.errors import ConfigError, DataError, UnknownNameError
from gendm.data import (
    ActionScaler,
    Batch,
    Normalizer,
    OfflineDataset,
    SequenceSampler,
    TrajectorySampler,
    TransitionSampler,
    list_datasets,
    load_dataset,
    minari_io,
    save_dataset,
    validate,
)
from gendm.data.minari_io import dataset_root, read_metadata
from gendm.data.samplers import action_chunk_indices, trajectory_starts

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A private Minari root: gendm and minari both read it, nothing touches the home directory."""
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def make_ds(lengths=(5, 3, 4), terminal_last=True, seed=0, env_id="Pendulum-v1") -> OfflineDataset:
    """Contiguous Pendulum-shaped episodes; observation dim 0 holds the row index (row + 1 for
    next_observations at the episode's end), actions dim 0 the row index / 100, rewards the row index."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    ends = np.cumsum(lengths).astype(np.int64)
    obs = rng.standard_normal((n, 3)).astype(np.float32)
    obs[:, 0] = np.arange(n)
    next_obs = np.roll(obs, -1, axis=0)
    for end in ends:  # the final observation of each episode is its own
        next_obs[end - 1] = rng.standard_normal(3)
        next_obs[end - 1, 0] = end
    terms, truncs = np.zeros(n, bool), np.zeros(n, bool)
    (terms if terminal_last else truncs)[ends[-1] - 1] = True
    truncs[ends[:-1] - 1] = True
    return OfflineDataset(
        observations=obs,
        actions=(np.arange(n) / 100).astype(np.float32)[:, None],
        rewards=np.arange(n, dtype=np.float32),
        next_observations=next_obs,
        terminations=terms,
        truncations=truncs,
        episode_ends=ends,
        env_id=env_id,
        metadata={"provenance": {"policy": "synthetic", "seed": seed}, "description": "test data"},
    )


# ------------------------------------------------------------------------------------- round trips
def test_gendm_to_minari_and_back(root):
    ds = make_ds()
    path = save_dataset(ds, "gendm/pendulum/synthetic-v0")
    assert path == root / "gendm" / "pendulum" / "synthetic-v0"

    m = minari.load_dataset("gendm/pendulum/synthetic-v0")
    assert (m.total_episodes, m.total_steps) == (3, 12)
    assert m.spec.env_spec.id == "Pendulum-v1"
    for i, episode in enumerate(m.iterate_episodes()):
        s, e = ds.episode_starts[i], ds.episode_ends[i]
        np.testing.assert_array_equal(
            episode.observations, np.concatenate([ds.observations[s:e], ds.next_observations[e - 1 : e]])
        )
        np.testing.assert_array_equal(episode.actions, ds.actions[s:e])
        np.testing.assert_array_equal(episode.rewards, ds.rewards[s:e])
        np.testing.assert_array_equal(episode.terminations, ds.terminations[s:e])
        np.testing.assert_array_equal(episode.truncations, ds.truncations[s:e])
    meta = m.storage.metadata
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (-1233.66, -156.995)  # gendm.envs.references
    assert meta["provenance"] == {"policy": "synthetic", "seed": 0}
    assert minari.get_normalized_score(m, np.array([-156.995]))[0] == pytest.approx(1.0)

    back = load_dataset("gendm/pendulum/synthetic-v0")
    for name in ("observations", "actions", "rewards", "next_observations", "terminations", "truncations"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name), err_msg=name)
        assert getattr(back, name).dtype == getattr(ds, name).dtype, name
    np.testing.assert_array_equal(back.episode_ends, ds.episode_ends)
    assert back.env_id == "Pendulum-v1"
    assert back.metadata["dataset_id"] == "gendm/pendulum/synthetic-v0"
    assert back.metadata["provenance"] == ds.metadata["provenance"]
    assert isinstance(back.action_space, gym.spaces.Box) and back.action_space.shape == (1,)
    assert load_dataset(path).metadata["total_steps"] == 12  # by path as well as by id


def test_minari_written_dataset_loads(root):
    """Episodes stepped like minari's DataCollector records them (lists of Python values), written by
    minari's own create_dataset_from_buffers (no jax needed; test_offline drives the DataCollector)."""
    buffers = minari_episode_buffers(gym.make("CartPole-v1"), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari warns about every missing optional field
        m = minari.create_dataset_from_buffers("test/cartpole/random-v0", buffers, env="CartPole-v1")

    ds = load_dataset("test/cartpole/random-v0")
    assert ds.env_id == "CartPole-v1" and ds.num_episodes == 4 and len(ds) == m.total_steps
    assert ds.actions.dtype == np.int64 and ds.observations.dtype == np.float32
    for i, episode in enumerate(m.iterate_episodes()):
        s, e = ds.episode_starts[i], ds.episode_ends[i]
        np.testing.assert_array_equal(ds.observations[s:e], episode.observations[:-1])
        np.testing.assert_array_equal(ds.next_observations[s:e], episode.observations[1:])
        np.testing.assert_array_equal(ds.actions[s:e], episode.actions)
        np.testing.assert_array_equal(ds.rewards[s:e], episode.rewards)
        np.testing.assert_array_equal(ds.terminations[s:e], episode.terminations)
    # and gendm can write it back under a new id
    save_dataset(ds, "test/cartpole/copy-v0")
    assert minari.load_dataset("test/cartpole/copy-v0").total_steps == m.total_steps


def test_unknown_id_suggests_close_names(root):
    save_dataset(make_ds(), "gendm/pendulum/medium-v0")
    save_dataset(make_ds(), "gendm/pendulum/expert-v0")
    assert list_datasets() == ["gendm/pendulum/expert-v0", "gendm/pendulum/medium-v0"]
    with pytest.raises(UnknownNameError, match=r"Did you mean: gendm/pendulum/medium-v0") as e:
        load_dataset("gendm/pendulum/medum-v0")
    assert "gendm data list" in str(e.value)
    with pytest.raises(ConfigError, match="namespace/name-vN"):
        save_dataset(make_ds(), "gendm/pendulum/medium")


def test_root_defaults_to_minari(monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "x"))
    assert dataset_root() == tmp_path / "x"
    assert dataset_root(tmp_path / "y") == tmp_path / "y"
    monkeypatch.delenv("MINARI_DATASETS_PATH")
    assert dataset_root().parts[-2:] == (".minari", "datasets")


def test_save_refuses_existing_and_overwrites_atomically(root, monkeypatch):
    save_dataset(make_ds(seed=0), "gendm/pendulum/a-v0")
    with pytest.raises(DataError, match=r"already exists.*overwrite"):
        save_dataset(make_ds(seed=1), "gendm/pendulum/a-v0")
    save_dataset(make_ds(seed=1), "gendm/pendulum/a-v0", overwrite=True)
    assert load_dataset("gendm/pendulum/a-v0").metadata["provenance"]["seed"] == 1

    def crash(f, ds, *dtypes):  # a crash half way through writing the HDF5 file
        f.create_group("episode_0").create_dataset("rewards", data=ds.rewards[:1])
        raise RuntimeError("disk full")

    monkeypatch.setattr(minari_io, "_write_episodes", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_dataset(make_ds(seed=2), "gendm/pendulum/a-v0", overwrite=True)
    with pytest.raises(RuntimeError, match="disk full"):
        save_dataset(make_ds(seed=2), "gendm/pendulum/b-v0")
    assert load_dataset("gendm/pendulum/a-v0").metadata["provenance"]["seed"] == 1  # the old one, whole
    assert not (root / "gendm" / "pendulum" / "b-v0").exists()
    assert sorted(p.name for p in (root / "gendm" / "pendulum").iterdir() if p.is_dir()) == [
        "a-v0"
    ]  # no temp dir
    assert list_datasets() == ["gendm/pendulum/a-v0"]


def test_corrupt_files_raise_data_error(root):
    path = save_dataset(make_ds(), "gendm/pendulum/c-v0") / "data"
    data = (path / "main_data.hdf5").read_bytes()
    (path / "main_data.hdf5").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"main_data\.hdf5.*corrupt.*create it again"):
        load_dataset("gendm/pendulum/c-v0")
    (path / "metadata.json").write_text('{"total_steps": 1')
    with pytest.raises(DataError, match=r"metadata\.json.*corrupt"):
        load_dataset("gendm/pendulum/c-v0")
    meta = json.loads(json.dumps({"data_format": "arrow"}))
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="'arrow' format"):
        load_dataset("gendm/pendulum/c-v0")


# ------------------------------------------------------------------------------------- validation
def _nan(field, row, value=np.nan):
    def edit(ds):
        getattr(ds, field)[row] = value

    return edit


def _set(field, value):
    def edit(ds):
        setattr(ds, field, value(ds))

    return edit


BAD = {
    "nan-observations": (_nan("observations", 6), r"'observations' holds NaN at row 6 \(episode 1, step 1\)"),
    "inf-rewards": (_nan("rewards", 9, np.inf), r"'rewards' holds Inf at row 9 \(episode 2, step 1\)"),
    "nan-actions": (_nan("actions", 0), r"'actions' holds NaN at row 0 \(episode 0, step 0\)"),
    "nan-next": (
        _nan("next_observations", 11),
        r"'next_observations' holds NaN at row 11 \(episode 2, step 3\)",
    ),
    "short-actions": (
        _set("actions", lambda ds: ds.actions[:-1]),
        r"'actions' has 11 rows but rewards has 12",
    ),
    "empty-episode": (_set("episode_ends", lambda ds: np.array([5, 5, 12])), r"Episode 1 is empty"),
    "bad-last-end": (_set("episode_ends", lambda ds: np.array([5, 8, 11])), r"episode_ends\[-1\] = 11"),
    "int-flags": (_set("terminations", lambda ds: ds.terminations.astype(np.int8)), r"'terminations'.*bool"),
    "interior-flag": (_nan("terminations", 2, True), r"'terminations' is set at row 2 \(episode 0, step 2\)"),
    "open-end": (_nan("truncations", 7, False), r"Episode 1 \(rows 5\.\.7\) ends with neither"),
    "obs-shape": (
        _set("observations", lambda ds: np.zeros((12, 4), np.float32)),
        r"observations have shape \(12, 4\) but next_observations",
    ),
    "int-actions": (_set("actions", lambda ds: np.zeros((12, 1), np.int64)), r"'actions' has dtype int64"),
    "wide-actions": (
        _set("actions", lambda ds: np.zeros((12, 2), np.float32)),
        r"'actions' has per-row shape",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_validation_names_the_problem(case, root):
    edit, pattern = BAD[case]
    ds = make_ds()
    validate(ds, *ds.spaces())  # the clean dataset passes
    edit(ds)
    with pytest.raises(DataError, match=pattern):
        validate(ds, *make_ds().spaces())
    with pytest.raises(DataError, match=pattern):  # save validates first and writes nothing
        save_dataset(ds, "gendm/pendulum/bad-v0")
    assert list_datasets() == []


def test_discrete_and_contiguity_checks(root):
    space = gym.spaces.Discrete(2)
    ds = make_ds()
    with pytest.raises(DataError, match=r"'actions' has dtype float32.*one integer per row"):
        validate(ds, action_space=space)
    ds.actions = np.array([0, 2] + [0] * 10)
    with pytest.raises(DataError, match=r"'actions' holds 2 at row 1"):
        validate(ds, action_space=space)
    ds = make_ds()
    ds.next_observations[2, 1] += 1.0  # breaks next_obs[t] == obs[t+1] inside episode 0
    validate(ds)  # fine as transitions...
    with pytest.raises(DataError, match=r"next_observations at row 2 \(episode 0, step 2\).*contiguous"):
        save_dataset(ds, "gendm/pendulum/gap-v0")  # ...but not storable as Minari episodes


def test_nan_hint_loads_without_validation_and_the_quoted_code_works(root, tmp_path):
    ds = make_ds(lengths=(5, 3, 4))
    save_dataset(ds, "gendm/pendulum/nan-v0")
    other = tmp_path / "elsewhere"
    save_dataset(ds, "gendm/pendulum/nan-v0", root=other)
    for path in (root, other):
        with h5py.File(path / "gendm/pendulum/nan-v0/data/main_data.hdf5", "r+") as f:
            f["episode_1/observations"][1, 2] = np.nan  # row 6 of the flat arrays
    for kwargs in ({}, {"root": other}):
        with pytest.raises(DataError, match=r"'observations' holds NaN at row 6 \(episode 1") as e:
            load_dataset("gendm/pendulum/nan-v0", **kwargs)
        code = re.search(r"`([^`]*)`", str(e.value)).group(1)  # the hint's exact Python
        assert "validate=False" in code and ("root=" in code) == bool(kwargs)
        namespace = {"gendm": gendm}
        exec(code, namespace)
        fixed = namespace["ds"]
        assert fixed.num_episodes == 2 and len(fixed) == 9
        np.testing.assert_array_equal(fixed.rewards, np.r_[0:5, 8:12])
        validate(fixed, *fixed.spaces())
    raw = load_dataset("gendm/pendulum/nan-v0", validate=False)
    assert np.isnan(raw.observations[6, 2]) and raw.finite_episodes().tolist() == [0, 2]
    with pytest.raises(DataError, match=r"keep the finite episodes: `ds = ds.select_episodes"):
        validate(raw)  # an in-memory dataset: the hint needs no loading


def test_declared_space_dtype_is_the_stored_dtype(root):
    """A float64 space (a MuJoCo env's) over gendm's float32 arrays is declared float32; integer
    spaces are written in their own dtype."""
    ds = make_ds()
    obs64 = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
    act64 = gym.spaces.Box(-2.0, 2.0, (1,), np.float64)
    save_dataset(ds, "gendm/pendulum/f64-v0", observation_space=obs64, action_space=act64)
    meta = json.loads((root / "gendm/pendulum/f64-v0/data/metadata.json").read_text())
    with h5py.File(root / "gendm/pendulum/f64-v0/data/main_data.hdf5") as f:
        stored = {k: f[f"episode_0/{k}"].dtype for k in ("observations", "actions")}
    for key, name in (("observations", "observation_space"), ("actions", "action_space")):
        assert json.loads(meta[name])["dtype"] == str(stored[key]) == "float32"
    m = minari.load_dataset("gendm/pendulum/f64-v0")
    episode = next(iter(m.iterate_episodes()))
    assert m.observation_space.dtype == episode.observations.dtype == np.float32
    assert m.action_space.dtype == episode.actions.dtype == np.float32
    assert m.action_space.low.tolist() == [-2.0] and m.action_space.contains(episode.actions[0])
    back = load_dataset("gendm/pendulum/f64-v0")
    assert back.observation_space.dtype == back.observations.dtype

    ints = make_ds()
    ints.observations = np.abs(ints.observations).astype(np.int64)  # int64 values of a uint8 space
    ints.next_observations = np.abs(ints.next_observations).astype(np.int64)
    img = gym.spaces.Box(0, 255, (3,), np.uint8)
    save_dataset(ints, "gendm/pendulum/u8-v0", observation_space=img, action_space=ds.action_space)
    m = minari.load_dataset("gendm/pendulum/u8-v0")
    episode = next(iter(m.iterate_episodes()))
    assert m.observation_space.dtype == episode.observations.dtype == np.uint8
    ints.observations[0, 0] = 300
    with pytest.raises(DataError, match=r"'observations' holds values in \[0, 300\].*uint8"):
        save_dataset(ints, "gendm/pendulum/u8-v1", observation_space=img, action_space=ds.action_space)


def test_empty_root_says_so_and_names_it(root, tmp_path, capsys):
    with pytest.raises(UnknownNameError) as e:
        load_dataset("gendm/pendulum/medium-v0")
    message = str(e.value)
    assert "Available: ." not in message and str(root) in message and "does not exist" in message
    assert "MINARI_DATASETS_PATH" in message and "gendm data collect" in message
    root.mkdir(parents=True)
    with pytest.raises(UnknownNameError, match=r"holds no dataset"):
        load_dataset("gendm/pendulum/medium-v0")
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert f"datasets root {root} (from $MINARI_DATASETS_PATH) holds no dataset" in out
    assert main(["data", "list", "--root", str(tmp_path / "none")]) == 0
    assert f"{tmp_path / 'none'} (from --root) does not exist" in capsys.readouterr().out


def test_list_shows_the_env_of_a_minari_written_dataset(root, capsys):
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    steps = {"observations": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
    for _ in range(3):
        obs, reward, term, trunc, _ = env.step(0)
        for key, value in zip(steps, (obs, 0, reward, term, trunc)):
            steps[key].append(value)
    steps["truncations"][-1] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            "test/cartpole/short-v0", [minari.data_collector.EpisodeBuffer(id=0, **steps)], env=env
        )
    assert "env_id" not in read_metadata("test/cartpole/short-v0")  # minari records only env_spec
    assert main(["data", "list"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split()[:3] == ["test/cartpole/short-v0", "CartPole-v1", "3"]


# ------------------------------------------------------------------------------- statistics, utils
def test_stats_equal_numpy():
    ds = make_ds(lengths=(5, 3, 4, 7))
    s = ds.stats()
    returns = np.array([ds.rewards[a:b].sum() for a, b in zip(ds.episode_starts, ds.episode_ends)])
    assert (s["transitions"], s["episodes"]) == (19, 4)
    assert (s["terminations"], s["truncations"]) == (1, 3)
    assert s["return"] == pytest.approx(
        {"mean": returns.mean(), "std": returns.std(), "min": returns.min(), "max": returns.max()}
    )
    assert s["length"] == pytest.approx({"mean": 4.75, "std": np.std([5, 3, 4, 7]), "min": 3, "max": 7})
    for key, x in (("observations", ds.observations), ("actions", ds.actions)):
        np.testing.assert_allclose(s[key]["mean"], x.astype(np.float64).mean(0), rtol=1e-12)
        np.testing.assert_allclose(s[key]["std"], x.astype(np.float64).std(0), rtol=1e-6)
        np.testing.assert_array_equal(s[key]["min"], x.min(0))
        np.testing.assert_array_equal(s[key]["max"], x.max(0))


def test_select_and_concatenate_keep_episodes():
    ds = make_ds(lengths=(5, 3, 4))
    sub = ds.select_episodes([2, 0])
    np.testing.assert_array_equal(sub.episode_ends, [4, 9])
    np.testing.assert_array_equal(sub.rewards, np.r_[8:12, 0:5])
    validate(sub)
    both = OfflineDataset.concatenate([ds, sub])
    np.testing.assert_array_equal(both.episode_ends, [5, 8, 12, 16, 21])
    np.testing.assert_array_equal(both.episode_returns(), [10, 18, 38, 38, 10])
    validate(both)
    with pytest.raises(DataError, match="different environments"):
        OfflineDataset.concatenate([ds, make_ds(env_id="CartPole-v1")])


def test_normalizer_and_action_scaler():
    x = np.random.default_rng(0).normal(3.0, 2.0, (1000, 4)).astype(np.float32)
    x[:, 3] = 5.0  # a constant dimension stays finite
    norm = Normalizer((4,))
    norm.fit(x, eps=1e-3)
    y = norm(torch.as_tensor(x))
    assert torch.isfinite(y).all()
    np.testing.assert_allclose(y[:, :3].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(y[:, :3].std(0, correction=0), 1, atol=1e-3)
    state = norm.state_dict()
    assert set(state) == {"mean", "std"} and all(isinstance(v, torch.Tensor) for v in state.values())

    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    scaler = ActionScaler.from_space(space)
    a = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, 0.25]], np.float32)
    np.testing.assert_allclose(scaler.scale(a), [[-1, -1], [1, 1], [0, -0.5]])
    np.testing.assert_allclose(scaler.unscale(scaler.scale(a)), a, atol=1e-6)
    t = scaler.scale(torch.as_tensor(a))
    assert isinstance(t, torch.Tensor) and torch.allclose(scaler.unscale(t), torch.as_tensor(a))
    with pytest.raises(ConfigError, match="finite Box bounds"):
        ActionScaler.from_space(gym.spaces.Box(-np.inf, np.inf, (2,)))


# --------------------------------------------------------------------------------- windows, samplers
def test_action_chunk_indices_hand_computed():
    obs_idx, act_idx, pad = action_chunk_indices(np.array([3, 7]), obs_horizon=2, pred_horizon=4)
    np.testing.assert_array_equal(obs_idx, [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4], [4, 5], [5, 6]])
    np.testing.assert_array_equal(
        act_idx,
        [[0, 0, 1, 2], [0, 1, 2, 2], [1, 2, 2, 2], [3, 3, 4, 5], [3, 4, 5, 6], [4, 5, 6, 6], [5, 6, 6, 6]],
    )
    T, F = True, False
    np.testing.assert_array_equal(
        pad,
        [[T, F, F, F], [F, F, F, T], [F, F, T, T], [T, F, F, F], [F, F, F, F], [F, F, F, T], [F, F, T, T]],
    )


def test_trajectory_starts():
    np.testing.assert_array_equal(trajectory_starts(np.array([3, 7]), 3), [0, 3, 4])
    np.testing.assert_array_equal(trajectory_starts(np.array([3, 7]), 3, pad_tail=True), np.arange(7))
    with pytest.raises(DataError, match="No episode is at least 5 steps long"):
        trajectory_starts(np.array([3, 7]), 5)


@pytest.mark.parametrize("device", DEVICES)
def test_transition_sampler(device):
    ds = make_ds(lengths=(50, 30, 40))
    batch = TransitionSampler(ds, device, seed=0).sample(256)
    assert isinstance(batch, Batch)
    assert batch.obs.shape == (256, 3) and batch.actions.shape == (256, 1) and batch.rewards.shape == (256,)
    assert all(t.device.type == device for t in batch)
    rows = batch.obs[:, 0].long().cpu().numpy()
    np.testing.assert_array_equal(batch.rewards.cpu().numpy(), rows)
    np.testing.assert_allclose(batch.next_obs.cpu().numpy(), ds.next_observations[rows])
    np.testing.assert_array_equal(batch.truncations.cpu().numpy(), ds.truncations[rows])
    again = TransitionSampler(ds, device, seed=0).sample(256)
    assert torch.equal(again.obs, batch.obs)


@pytest.mark.parametrize("device", DEVICES)
def test_sequence_sampler_matches_reference_and_stays_in_episode(device):
    ds = make_ds(lengths=(5, 2, 9, 1, 6))
    b = SequenceSampler(ds, device, seed=1, obs_horizon=2, pred_horizon=8).sample(512)
    assert b.obs.shape == (512, 2, 3) and b.actions.shape == (512, 8, 1)
    assert b.rewards.shape == b.terminations.shape == b.is_pad.shape == (512, 8)
    assert b.obs.device.type == device
    obs_idx, act_idx, pad = action_chunk_indices(ds.episode_ends, 2, 8)
    t = b.obs[:, -1, 0].long().cpu().numpy()  # the current step of each sample
    np.testing.assert_array_equal(b.obs[..., 0].long().cpu().numpy(), obs_idx[t])
    np.testing.assert_array_equal(np.rint(b.actions[..., 0].cpu().numpy() * 100), act_idx[t])
    np.testing.assert_array_equal(b.is_pad.cpu().numpy(), pad[t])
    episode = ds.episode_ids()
    assert (episode[act_idx[t]] == episode[t][:, None]).all()  # windows never cross episodes
    assert (b.rewards[b.is_pad] == 0).all() and (b.terminations[b.is_pad] == 0).all()
    assert set(t) == set(range(len(ds)))  # every step is a sample


@pytest.mark.parametrize("pad_tail", [False, True])
def test_trajectory_sampler_windows(pad_tail):
    ds = make_ds(lengths=(5, 2, 9, 6))
    sampler = TrajectorySampler(ds, "cpu", seed=0, horizon=4, pad_tail=pad_tail)
    assert len(sampler) == (22 if pad_tail else 2 + 6 + 3)
    b = sampler.sample(400)
    assert b.obs.shape == (400, 4, 3) and b.actions.shape == (400, 4, 1)
    rows = b.obs[..., 0].long().numpy()
    episode = ds.episode_ids()
    assert (episode[rows] == episode[rows[:, :1]]).all()
    np.testing.assert_array_equal(np.diff(rows, axis=1) == 1, ~b.is_pad.numpy()[:, 1:])
    assert b.is_pad.any().item() == pad_tail
    np.testing.assert_array_equal(b.rewards.numpy(), np.where(b.is_pad.numpy(), 0, rows))
