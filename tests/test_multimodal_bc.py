"""The fair multimodal baselines of §9: mixture-density BC (``mdn_bc``) and discretised-action BC with
residual offsets (``bet_bc``) keep both modes of bimodal demonstrations where Gaussian BC averages them;
k-means bins, likelihood, checkpoints, config errors and the CLI."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from gendm.agents.bc import BC, BCConfig
from gendm.agents.bet_bc import BeTBC, BeTBCConfig, kmeans
from gendm.agents.mdn_bc import MDNBC, MDNBCConfig
from gendm.cli import main
from gendm.core.config import apply_overrides
from gendm.core.errors import ConfigError
from gendm.data.collect import collect
from gendm.data.dataset import OfflineDataset
from gendm.data.minari_io import save_dataset
from gendm.train import all_methods

MODE = 0.7
OBS_SPACE = gym.spaces.Box(-1, 1, (1,), np.float32)
ACT_SPACE = gym.spaces.Box(-1, 1, (1,), np.float32)
CPU = torch.device("cpu")


def bimodal_dataset(n: int = 2000, seed: int = 0) -> OfflineDataset:
    """Observations uniform in [-1, 1]; for every one of them the action is +0.7 or -0.7 by a fair coin,
    plus N(0, 0.03) noise: p(a | s) has two modes and its mean, 0, is in neither."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    actions = (MODE * rng.choice([-1.0, 1.0], (n, 1)) + 0.03 * rng.standard_normal((n, 1))).astype(np.float32)
    ends = np.arange(10, n + 1, 10)
    done = np.zeros(n, bool)
    done[ends - 1] = True
    return OfflineDataset(
        obs, actions, np.zeros(n, np.float32), obs.copy(), np.zeros(n, bool), done, ends, ""
    )


@pytest.fixture(scope="module")
def bimodal():
    return bimodal_dataset()


def fit(agent, data, steps: int, batch_size: int = 256) -> list[dict[str, float]]:
    agent.prepare(data)
    sampler = agent.make_sampler(data, CPU, 0)
    return [{k: float(v) for k, v in agent.update(sampler.sample(batch_size)).items()} for _ in range(steps)]


def agents():
    return {
        "bc": lambda: BC(BCConfig(hidden=(64, 64)), OBS_SPACE, ACT_SPACE, CPU),
        "mdn_bc": lambda: MDNBC(MDNBCConfig(hidden=(64, 64), num_components=2), OBS_SPACE, ACT_SPACE, CPU),
        "bet_bc": lambda: BeTBC(BeTBCConfig(hidden=(64, 64), num_bins=4), OBS_SPACE, ACT_SPACE, CPU),
    }


@pytest.fixture(scope="module")
def trained(bimodal):
    torch.manual_seed(0)
    out = {}
    for name, make in agents().items():
        agent = make()
        out[name] = (agent, fit(agent, bimodal, steps=600))
    return out


def mode_shares(actions: torch.Tensor) -> tuple[float, float, float]:
    """Shares of actions near +0.7, near -0.7, and between the modes (|a| < 0.35)."""
    a = actions.flatten()
    return (
        float(((a - MODE).abs() < 0.2).float().mean()),
        float(((a + MODE).abs() < 0.2).float().mean()),
        float((a.abs() < 0.35).float().mean()),
    )


@pytest.mark.parametrize("algo", ["mdn_bc", "bet_bc"])
def test_sampled_actions_keep_both_modes_where_gaussian_bc_averages_them(trained, algo):
    obs = torch.linspace(-0.9, 0.9, 50).repeat(40)[:, None]
    torch.manual_seed(1)
    up, down, between = mode_shares(trained[algo][0].act(obs, deterministic=False))
    # half each in the data; a unimodal fit puts nearly nothing near either mode
    assert up > 0.25 and down > 0.25 and between < 0.1, (up, down, between)
    # acting deterministically commits to one mode, it does not average them
    assert (trained[algo][0].act(obs[:50], deterministic=True).abs() > 0.45).all()
    bc = trained["bc"][0]
    assert bc.act(obs[:50], deterministic=True).abs().max() < 0.3  # the mean of the two modes
    up_bc, down_bc, between_bc = mode_shares(bc.act(obs, deterministic=False))
    assert between_bc > 0.2, (up_bc, down_bc, between_bc)


def test_mixture_likelihood_decreases_far_below_the_best_single_gaussian(trained):
    nll = [m["losses/nll"] for m in trained["mdn_bc"][1]]
    # one Gaussian fitted to +-0.7 (std 0.7) cannot get below 0.5 log(2 pi e 0.49) ~ 1.06 nats;
    # the two-component mixture of std 0.03 reaches about -0.9
    assert np.mean(nll[-50:]) < 0.0 and np.mean(nll[:5]) > np.mean(nll[-50:]) + 1.0, (nll[:5], nll[-5:])
    bc_nll = np.mean([m["losses/nll"] for m in trained["bc"][1][-50:]])
    assert bc_nll > 0.9


def test_offset_head_and_bin_classifier_learn(trained):
    metrics = trained["bet_bc"][1]
    late = {k: np.mean([m[k] for m in metrics[-50:]]) for k in metrics[0]}
    assert late["losses/offset"] < 0.01  # the noise is 0.03^2 ~ 0.001; a centre alone is further off
    # the bin of +-0.7 is a coin flip given the observation: the classifier cannot be nearly always right
    assert 0.2 < late["bet/bin_accuracy"] < 0.75


def test_kmeans_centres_land_on_the_modes_and_are_deterministic(bimodal):
    rng = np.random.default_rng(0)
    true = np.array([[-0.6, -0.6], [0.6, -0.6], [0.0, 0.7]])
    points = true[rng.integers(0, 3, 3000)] + 0.05 * rng.standard_normal((3000, 2))
    centres = kmeans(torch.as_tensor(points), 3, iters=50, seed=0).numpy()
    nearest = np.linalg.norm(true[:, None] - centres[None], axis=-1).min(1)
    assert nearest.max() < 0.02, centres
    assert torch.equal(kmeans(torch.as_tensor(points), 3, seed=0), kmeans(torch.as_tensor(points), 3, seed=0))
    agent = BeTBC(BeTBCConfig(hidden=(8,), num_bins=2), OBS_SPACE, ACT_SPACE, CPU)
    agent.prepare(bimodal)
    assert sorted(agent.policy.centres.flatten().tolist()) == pytest.approx([-MODE, MODE], abs=0.01)
    # fewer distinct actions than bins: duplicated centres, no NaN
    assert torch.isfinite(kmeans(torch.zeros(10, 2), 4)).all()


def test_bins_are_fitted_in_the_rescaled_action_space(bimodal):
    space = gym.spaces.Box(0, 4, (1,), np.float32)  # a = 2 + 2 u, u in [-1, 1]
    shifted = OfflineDataset(**{**bimodal.__dict__, "actions": 2 + 2 * bimodal.actions})
    agent = BeTBC(BeTBCConfig(hidden=(8,), num_bins=2), OBS_SPACE, space, CPU)
    agent.prepare(shifted)
    assert sorted(agent.policy.centres.flatten().tolist()) == pytest.approx([-MODE, MODE], abs=0.01)
    action = agent.act(torch.zeros(5, 1))
    assert ((action >= 0) & (action <= 4)).all()


@pytest.mark.parametrize("algo", ["mdn_bc", "bet_bc"])
def test_checkpoint_roundtrip_gives_identical_actions(trained, algo):
    agent = trained[algo][0]
    clone = agents()[algo]()  # fresh weights, and for bet_bc zero centres: prepare is not called
    clone.load_state_dict(agent.state_dict())
    obs = torch.linspace(-1, 1, 33)[:, None]
    assert torch.equal(agent.act(obs, deterministic=True), clone.act(obs, deterministic=True))
    torch.manual_seed(3)
    sampled = agent.act(obs, deterministic=False)
    torch.manual_seed(3)
    assert torch.equal(sampled, clone.act(obs, deterministic=False))
    assert clone.num_updates == agent.num_updates == 600


@pytest.mark.parametrize("algo", ["mdn_bc", "bet_bc"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_update_returns_detached_scalars_and_changes_parameters(bimodal, algo, precision):
    spec = all_methods().get(algo)
    assert spec.family == "offline" and spec.action_spaces == ("box",)
    config = spec.config_cls(hidden=(16, 16), batch_size=32, precision=precision, normalize_obs=True)
    agent = spec.builder(config, OBS_SPACE, ACT_SPACE, CPU, 100)
    agent.prepare(bimodal)
    assert agent.obs_norm.std.item() == pytest.approx(bimodal.observations.std() + 1e-3, rel=1e-4)
    params = [p for m in agent.modules() for p in m.parameters()]
    before = [p.detach().clone() for p in params]
    metrics = agent.update(agent.make_sampler(bimodal, CPU, 0).sample(32))
    assert all(v.ndim == 0 and not v.requires_grad and torch.isfinite(v) for v in metrics.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, params))


@pytest.mark.parametrize(
    ("algo", "field", "value"),
    [
        ("mdn_bc", "num_components", 0),
        ("mdn_bc", "learning_rate", 0.0),
        ("mdn_bc", "log_std_min", 3.0),
        ("bet_bc", "num_bins", 0),
        ("bet_bc", "kmeans_iters", 0),
        ("bet_bc", "focal_gamma", -1.0),
        ("bet_bc", "offset_loss_weight", -1.0),
        ("bet_bc", "temperature", 0.0),
        ("bet_bc", "batch_size", 0),
    ],
)
def test_bad_config_values_raise_config_errors_naming_the_field(algo, field, value):
    with pytest.raises(ConfigError, match=field):
        all_methods().get(algo).config_cls(**{field: value})
    with pytest.raises(ConfigError, match=field):
        apply_overrides(all_methods().get(algo).config_cls(), [f"{field}={value}"])


def test_more_bins_than_actions_is_refused_naming_the_field(bimodal):
    agent = BeTBC(BeTBCConfig(hidden=(8,), num_bins=64), OBS_SPACE, ACT_SPACE, CPU)
    fields = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")
    small = OfflineDataset(*(getattr(bimodal, f)[:10] for f in fields), np.array([10]), "")
    with pytest.raises(ConfigError, match=r"num_bins.*64 bins.*has 10"):
        agent.prepare(small)


DATASET_ID = "gendm-test/twopath-mm/expert-v0"


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    data = collect("gendm/TwoPathReach-v0", "expert", episodes=10, seed=0, progress=False)
    save_dataset(data, DATASET_ID, root=root)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.mark.parametrize(("algo", "extra"), [("mdn_bc", "num_components=3"), ("bet_bc", "num_bins=8")])
def test_cli_trains_on_a_collected_dataset(tmp_path, data_root, capsys, algo, extra):
    out = tmp_path / algo
    args = ["train", algo, "--dataset", DATASET_ID, "--steps", "60", "--eval-every", "30"]
    args += ["--eval-episodes", "2", "--out", str(out), "--no-progress"]
    args += ["--set", "hidden=32,32", "--set", extra]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["algo"] == algo and s["dataset"] == DATASET_ID and s["grad_steps"] == 60
    assert s["status"] == "ok" and 0.0 <= s["success_rate"] <= 1.0
    assert "60 gradient steps on" in capsys.readouterr().out


def test_bench_spec_runs_the_baselines_on_a_dataset_task(tmp_path, data_root):
    from gendm.bench.spec import parse_spec
    from gendm.bench.worker import execute

    methods = {
        "mdn-k2": {"algo": "mdn_bc", "set": {"hidden": [32, 32], "num_components": 2}},
        "bet": {"algo": "bet_bc", "set": {"hidden": [32, 32], "num_bins": 4}},
    }
    spec = parse_spec(
        {
            "seeds": 1,
            "steps": 40,
            "eval_every": 40,
            "eval_episodes": 2,
            "methods": methods,
            "tasks": [{"dataset": DATASET_ID}],
        }
    )
    assert [(r.method, r.task) for r in spec.runs] == [("mdn-k2", DATASET_ID), ("bet", DATASET_ID)]
    for run in spec.runs:
        summary = execute(run, tmp_path / run.method)
        assert summary["status"] == "ok" and summary["grad_steps"] == 40
