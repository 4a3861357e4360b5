"""IDQL, Diffusion-QL and V-GPS on a one-step task whose best action is known: each selects better
actions than its proposals, beats the behaviour data, round-trips its checkpoint; V-GPS improves a
noisy policy without touching its weights. Plus the two additions to ``generative`` they need."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from gendm.agents.critics import IQLCritic, expectile_loss, return_scale_factor
from gendm.agents.loading import checkpoint_agent
from gendm.cli import main
from gendm.core.errors import ConfigError
from gendm.data.collect import steps_to_dataset
from gendm.data.minari_io import save_dataset
from gendm.generative import GaussianDiffusion
from gendm.generative.diffusion import vp_alphas_cumprod
from gendm.train import TrainSettings, all_methods, train_offline
from gendm.train.offline import OfflineTrainer

ENV = "gendm-test/Bandit-v0"
DEVICE = torch.device("cpu")


class Bandit(gym.Env):
    """One step: observe s ~ U(-1, 1), act a in [-1, 1], reward 1 - (a - s)^2, terminate. Q(s, a) is the
    reward, the best action is a = s; uniform random actions earn 1/3 on average."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = float(self.np_random.uniform(-1, 1))
        return np.array([self.s], np.float32), {}

    def step(self, action):
        a = float(np.clip(action[0], -1, 1))
        return np.array([self.s], np.float32), 1.0 - (a - self.s) ** 2, True, False, {}


gym.register(ENV, entry_point=Bandit, max_episode_steps=1)


def reward(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return 1.0 - (actions - obs).pow(2).squeeze(-1)


@pytest.fixture(scope="module")
def data():
    """2000 uniformly random one-step episodes: mean return 1/3, no action is better on average."""
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, (2000, 1)).astype(np.float32)
    a = rng.uniform(-1, 1, (2000, 1)).astype(np.float32)
    steps = {
        "observations": s,
        "actions": a,
        "rewards": (1 - (a - s) ** 2)[:, 0],
        "next_observations": s,
        "terminations": np.ones(2000, bool),
        "truncations": np.zeros(2000, bool),
    }
    return steps_to_dataset(steps, ENV)


TINY = {  # tiny networks, fast learning rates
    "idql": {
        "critic_hidden": (32, 32),
        "denoiser_hidden": 32,
        "denoiser_depth": 1,
        "num_candidates": 16,
        "actor_learning_rate": 1e-3,
        "critic_learning_rate": 1e-3,
    },
    "diffusion_ql": {
        "hidden": (32, 32),
        "time_dim": 8,
        "activation": "silu",
        "num_candidates": 16,
        "learning_rate": 1e-3,
    },
    "vgps": {"hidden": (32, 32), "num_candidates": 16, "critic_learning_rate": 1e-3},
    "bc": {"hidden": (32, 32), "learning_rate": 3e-3},
    "iql": {"hidden": (32, 32), "actor_learning_rate": 1e-3, "critic_learning_rate": 1e-3},
}


def settings(tmp_path, algo, steps, name=None, **overrides):
    return TrainSettings(
        algo,
        steps=steps,
        out_dir=tmp_path / (name or algo),
        eval_every=steps,
        eval_episodes=100,
        log_every=steps,
        progress=False,
        tensorboard=False,
        overrides={"batch_size": 128} | TINY[algo] | overrides,
    )


def fit(tmp_path, algo, data, steps, name=None, **overrides):
    return train_offline(settings(tmp_path, algo, steps, name, **overrides), dataset=data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """IDQL and Diffusion-QL trained through the offline trainer (summary.json), rebuilt from their
    checkpoints."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for algo in ("idql", "diffusion_ql"):
        summary = fit(root, algo, data, steps=600)
        agent, _, _ = checkpoint_agent(root / algo)
        out[algo] = (summary, agent, root / algo)
    return out


@pytest.mark.parametrize("algo", ["idql", "diffusion_ql"])
def test_selected_actions_beat_the_proposals_and_the_data(trained, data, algo):
    summary, agent, run = trained[algo]
    assert (run / "summary.json").exists() and summary["status"] == "ok"
    assert summary["grad_steps"] == 600 and summary["dataset_transitions"] == 2000
    behaviour = float(data.episode_returns().mean())  # about 1/3
    assert summary["final_return"] > behaviour + 0.4, (behaviour, summary["curve"])
    torch.manual_seed(0)
    obs = torch.rand(500, 1) * 2 - 1
    proposals = agent.behaviour_actions(obs) if algo == "idql" else agent.policy_actions(obs)
    selected = agent.act(obs, deterministic=True)
    r_sel, r_prop = float(reward(obs, selected).mean()), float(reward(obs, proposals).mean())
    # IDQL's proposals come from the behaviour model (a blurred copy of the uniform data): selection
    # does the improving. Diffusion-QL's Q term already moved the policy itself; the softmax over Q
    # at temperature 1 keeps it.
    if algo == "idql":
        assert r_sel > r_prop + 0.2 and r_sel > 0.85, (r_sel, r_prop)
    else:
        assert r_prop > behaviour + 0.4 and r_sel > r_prop - 0.03, (r_sel, r_prop)
    # The critic is close to the true reward of what is selected.
    assert (agent.q_value(obs, selected) - reward(obs, selected)).abs().mean() < 0.2
    # Greedy selection among the candidates: ranked above a single proposal by the critic (for
    # Diffusion-QL's softmax at temperature 1 over Q values ~0.1 apart, only argmax is a clear
    # ranking), and at least as good in truth.
    agent.config.selector = "argmax"
    torch.manual_seed(0)
    greedy_actions = agent.act(obs)
    greedy = float(reward(obs, greedy_actions).mean())
    agent.config.selector = all_methods().get(algo).config_cls().selector
    assert agent.q_value(obs, greedy_actions).mean() > agent.q_value(obs, proposals).mean()
    if algo == "idql":
        assert agent.q_value(obs, selected).mean() > agent.q_value(obs, proposals).mean()
    assert greedy > r_prop + (0.3 if algo == "idql" else 0.0), (greedy, r_prop)


def test_idql_selectors_trade_greed_for_spread(trained):
    _, agent, _ = trained["idql"]
    obs = torch.full((400, 1), 0.5)
    spread, original = {}, (agent.config.selector, agent.config.temperature)
    for selector in ("argmax", "softmax", "expectile"):
        agent.config.selector, agent.config.temperature = selector, 0.05
        torch.manual_seed(1)
        a = agent.act(obs)
        spread[selector] = (float(reward(obs, a).mean()), float(a.std()))
    agent.config.selector, agent.config.temperature = original
    # Greedy is best and tightest; the implicit (expectile) policy keeps most of the behaviour spread.
    assert spread["argmax"][0] >= spread["softmax"][0] - 0.01 > spread["expectile"][0], spread
    assert spread["argmax"][1] < spread["expectile"][1], spread


@pytest.mark.parametrize("algo", ["idql", "diffusion_ql"])
def test_checkpoint_round_trip_reproduces_actions(trained, data, algo):
    _, agent, _ = trained[algo]
    spec = all_methods().get(algo)
    clone = spec.builder(agent.config, Bandit.observation_space, Bandit.action_space, DEVICE, 10)
    clone.load_state_dict(agent.state_dict())
    obs = torch.linspace(-1, 1, 9)[:, None]
    torch.manual_seed(3)
    a = agent.act(obs)
    torch.manual_seed(3)
    assert torch.equal(a, clone.act(obs)) and a.abs().max() <= 1
    batch = clone.make_sampler(data, DEVICE, 0).sample(16)
    metrics = clone.update(batch)
    assert metrics and all(torch.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("algo", ["idql", "diffusion_ql"])
def test_bf16_updates_and_the_optional_paths_run(data, algo):
    spec = all_methods().get(algo)
    extra = {"max_q_backup": True} if algo == "diffusion_ql" else {"selector": "expectile"}
    config = spec.config_cls(**TINY[algo], batch_size=16, precision="bf16", **extra)
    agent = spec.builder(config, Bandit.observation_space, Bandit.action_space, DEVICE, 10)
    before = {n: p.detach().clone() for n, p in agent.actor.named_parameters()}
    for _ in range(2):
        metrics = agent.update(agent.make_sampler(data, DEVICE, 0).sample(16))
    assert all(torch.isfinite(v) for v in metrics.values())
    assert any(not torch.equal(before[n], p) for n, p in agent.actor.named_parameters())
    assert agent.act(torch.zeros(3, 1)).shape == (3, 1)


def test_diffusion_ql_q_term_trains_the_policy_and_not_the_critic(data):
    """One backward for both losses: the Q term reaches the policy through the reverse chain, and
    reaches the critic not at all (its Q goes through detached critic weights)."""
    spec = all_methods().get("diffusion_ql")
    agent = spec.builder(
        spec.config_cls(**TINY["diffusion_ql"]), Bandit.observation_space, Bandit.action_space, DEVICE
    )
    batch = agent.make_sampler(data, DEVICE, 0).sample(32)
    grads = {}
    for eta in (0.0, 1.0):
        agent.config.eta = eta
        torch.manual_seed(0)
        loss, _ = agent._losses(batch, 0)
        agent.opt.zero_grad()
        loss.backward()
        grads[eta] = [[p.grad.clone() for p in m.parameters()] for m in (agent.critic, agent.actor)]
    assert all(torch.equal(a, b) for a, b in zip(grads[0.0][0], grads[1.0][0]))
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.0][1], grads[1.0][1]))


def test_configs_cite_the_papers_defaults_and_validate():
    idql, dql, vgps = (all_methods().get(a).config_cls() for a in ("idql", "diffusion_ql", "vgps"))
    assert (idql.diffusion_steps, idql.schedule, idql.expectile, idql.denoiser_depth) == (5, "vp", 0.7, 3)
    assert (idql.denoiser_dropout, idql.ema_decay, idql.num_candidates, idql.selector) == (
        0.1,
        0.999,
        64,
        "argmax",
    )
    assert (dql.diffusion_steps, dql.schedule, dql.eta, dql.ema_decay, dql.ema_every) == (
        5,
        "vp",
        1.0,
        0.995,
        5,
    )
    assert (dql.num_candidates, dql.selector, dql.hidden, dql.max_q_backup) == (
        50,
        "softmax",
        (256,) * 3,
        False,
    )
    assert (vgps.num_candidates, vgps.selector, vgps.critic) == (10, "argmax", None)
    for algo, field, value in [
        ("idql", "selector", "best"),
        ("diffusion_ql", "eta", -1.0),
        ("vgps", "tau", 0.0),
    ]:
        with pytest.raises(ConfigError, match=field):
            all_methods().get(algo).config_cls(**{field: value})
    assert all(all_methods().get(a).family == "offline" for a in ("idql", "diffusion_ql", "vgps"))


# ------------------------------------------------------------------------------------------ V-GPS
@pytest.fixture(scope="module")
def noisy_bc(tmp_path_factory, data):
    """Gaussian BC of the uniform data: mean ~0, std ~0.58 whatever s — a noisy, uninformed policy."""
    root = tmp_path_factory.mktemp("bc")
    summary = fit(root, "bc", data, steps=300)
    return root / "bc", summary


def weights_of(run) -> dict[str, torch.Tensor]:
    agent, _, _ = checkpoint_agent(run)
    return {
        f"{i}.{n}": p.detach().clone() for i, m in enumerate(agent.modules()) for n, p in m.named_parameters()
    }


def test_vgps_improves_a_noisy_policy_and_leaves_its_weights_untouched(tmp_path, data, noisy_bc):
    bc_run, bc_summary = noisy_bc
    before = weights_of(bc_run)
    files = {p.name: p.read_bytes() for p in (bc_run / "checkpoint").iterdir()}
    trainer = OfflineTrainer(settings(tmp_path, "vgps", 500, policy=str(bc_run)), data)
    summary = trainer.run()
    assert (tmp_path / "vgps" / "summary.json").exists() and summary["status"] == "ok"
    # BC acts by its mean (~0): about 2/3; the data earns 1/3; V-GPS picks among 16 noisy proposals.
    assert summary["final_return"] > bc_summary["final_return"] + 0.15, (bc_summary["final_return"], summary)
    policy = trainer.agent.policy
    after = {f"{i}.{n}": p for i, m in enumerate(policy.modules()) for n, p in m.named_parameters()}
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in after.values())
    assert files == {p.name: p.read_bytes() for p in (bc_run / "checkpoint").iterdir()}
    # Its checkpoint holds the critic, not the policy; rebuilt, it re-ranks the same way.
    clone, _, info = checkpoint_agent(tmp_path / "vgps")
    assert info["algo"] == "vgps" and not any(k.startswith("policy") for k in clone.parts)
    obs = torch.linspace(-1, 1, 7)[:, None]
    torch.manual_seed(5)
    a = trainer.agent.act(obs)
    torch.manual_seed(5)
    assert torch.equal(a, clone.act(obs))


def test_vgps_with_a_finished_iql_critic_only_evaluates(tmp_path, data, noisy_bc):
    bc_run, bc_summary = noisy_bc
    fit(tmp_path, "iql", data, steps=400)
    overrides = {"policy": str(bc_run), "critic": str(tmp_path / "iql")}
    trainer = OfflineTrainer(settings(tmp_path, "vgps", 2, name="vgps-iql", **overrides), data)
    assert trainer.agent.critic is None and list(trainer.agent.update(None)) == ["charts/critic_frozen"]
    summary = trainer.run()
    assert summary["final_return"] > bc_summary["final_return"] + 0.15, summary["curve"]


def test_cli_trains_each_method_on_a_named_dataset(tmp_path, monkeypatch, data, noisy_bc, capsys):
    # 200 episodes: loading reads HDF5 group by group, ~2 ms per episode.
    save_dataset(data.select_episodes(range(200)), "gendm-test/bandit/uniform-v0", root=tmp_path / "datasets")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    for algo, extra in [("idql", []), ("diffusion_ql", []), ("vgps", ["--set", f"policy={noisy_bc[0]}"])]:
        tiny = [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY[algo].items()]
        args = [
            "train",
            algo,
            "--dataset",
            "gendm-test/bandit/uniform-v0",
            "--steps",
            "20",
            "--eval-episodes",
            "5",
        ]
        args += ["--out", str(tmp_path / algo), "--no-progress", "--set", "batch_size=32", *extra]
        for pair in tiny:
            args += ["--set", pair]
        assert main(args) == 0, capsys.readouterr().err
        summary = json.loads((tmp_path / algo / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["grad_steps"] == 20 and summary["algo"] == algo


def test_vgps_refuses_a_missing_or_mismatched_policy(tmp_path, data):
    spec = all_methods().get("vgps")
    with pytest.raises(ConfigError, match="policy"):
        spec.builder(spec.config_cls(), Bandit.observation_space, Bandit.action_space, DEVICE)
    with pytest.raises(Exception, match="checkpoint"):
        spec.builder(
            spec.config_cls(policy=str(tmp_path)), Bandit.observation_space, Bandit.action_space, DEVICE
        )


# ---------------------------------------------------------------------- shared critic, generative
def test_iql_critic_fits_a_terminal_reward_and_its_expectile(data):
    torch.manual_seed(0)
    critic = IQLCritic(1, 1, (32, 32))
    opt = torch.optim.Adam(critic.trainable(), lr=3e-3)
    s = torch.as_tensor(data.observations)
    a = torch.as_tensor(data.actions)
    r = torch.as_tensor(data.rewards)
    for _ in range(400):
        loss, _, _ = critic.losses(s, a, r, s, torch.ones(len(r)), 0.99, 0.9)
        opt.zero_grad()
        loss.backward()
        opt.step()
        critic.update_target(0.05)
    assert (critic.q_target(s, a) - r).abs().mean() < 0.1
    # V at a high expectile sits above the average reward of the dataset's actions (1/3), below the max.
    v = critic.v(torch.zeros(1, 1)).detach()
    assert 0.4 < float(v) < 1.0
    u = torch.tensor([1.0, -1.0])
    assert float(expectile_loss(u, 0.9)) == pytest.approx((0.9 + 0.1) / 2)
    assert return_scale_factor(data, None) == 1.0
    assert return_scale_factor(data, 1000.0) == pytest.approx(1000 / np.ptp(data.episode_returns()))


def test_vp_schedule_matches_the_reference_formula():
    T = 5
    t = np.arange(1, T + 1)
    alpha = np.exp(-0.1 / T - 0.5 * (10.0 - 0.1) * (2 * t - 1) / T**2)  # vp_beta_schedule: 1 - beta
    assert np.allclose(vp_alphas_cumprod(T).numpy(), np.cumprod(alpha))
    assert float(vp_alphas_cumprod(T)[-1]) == pytest.approx(np.exp(-5.05))


def test_sample_with_grad_backpropagates_through_the_reverse_chain():
    torch.manual_seed(0)
    model = GaussianDiffusion("mlp", (2,), schedule="vp", num_train_steps=5, cond_dim=1, clip_x0=1.0)
    torch.nn.init.normal_(model.net.out.weight, std=0.1)  # zero-initialised output: give it a slope
    cond = torch.randn(8, 1)
    x = model.sample(cond=cond, solver="ddpm", steps=5)
    assert not x.requires_grad  # the default stays no_grad
    x = model.sample(cond=cond, solver="ddpm", steps=5, grad=True)
    x.pow(2).sum().backward()
    grads = [p.grad for p in model.net.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # With fixed noise the differentiable and the no-grad samples are the same draw.
    a = model.sample(cond=cond, steps=5, generator=torch.Generator().manual_seed(1))
    b = model.sample(cond=cond, steps=5, generator=torch.Generator().manual_seed(1), grad=True)
    assert torch.allclose(a, b.detach())
