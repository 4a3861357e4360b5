"""Diffusion Policy: it learns the bimodal two-path task that Gaussian BC fails, executes action chunks
from a per-sub-env queue, stays in bounds, round-trips through checkpoints, and every family trains
through the command line."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from gendm.agents.diffusion_policy import DiffusionPolicy, DiffusionPolicyConfig
from gendm.agents.loading import checkpoint_policy
from gendm.cli import main
from gendm.core.checkpoint import load_checkpoint, save_checkpoint_dir
from gendm.core.errors import ConfigError
from gendm.data.collect import collect
from gendm.data.minari_io import save_dataset
from gendm.train import TrainSettings, train_offline

ENV = "gendm/TwoPathReach-v0"
CPU = torch.device("cpu")
OBS_DIM = gym.make(ENV).observation_space.shape[0]
# Episodes last ~25 steps and the decision is taken 2-3 steps below the disc, so a short chunk (Tp 8,
# Ta 4) and a fast MLP denoiser; lr 1e-3 with a short warm-up for a run of a few thousand steps.
FAST = {
    "denoiser": "mlp",
    "width": 128,
    "depth": 2,
    "pred_horizon": 8,
    "action_horizon": 4,
    "learning_rate": 1e-3,
    "lr_warmup_steps": 50,
    "batch_size": 128,
}


@pytest.fixture(scope="module")
def expert_data():
    """100 bimodal expert episodes (about 3k transitions; every episode succeeds)."""
    return collect(ENV, "expert", episodes=100, seed=0, progress=False)


def spaces(env_id: str = ENV) -> tuple[gym.Space, gym.Space]:
    env = gym.make(env_id)
    return env.observation_space, env.action_space


def fit(tmp_path, algo, data, steps, seed=0, episodes=20, **overrides):
    settings = TrainSettings(
        algo,
        steps=steps,
        seed=seed,
        out_dir=tmp_path / f"{algo}-{seed}",
        eval_every=steps,
        eval_episodes=episodes,
        log_every=steps,
        progress=False,
        tensorboard=False,
        overrides=overrides,
    )
    return train_offline(settings, dataset=data)


def test_learns_the_two_path_task_that_gaussian_bc_fails(tmp_path, expert_data):
    """The issue's claim: both modes are demonstrated; BC averages them into the disc, Diffusion Policy
    samples one and goes round (v-prediction, DDPM 100 steps: 0.95-1.0 over seeds 0-3; BC 0.0)."""
    dp = fit(tmp_path, "diffusion_policy", expert_data, steps=3000, **FAST, prediction="v")
    bc = fit(tmp_path, "bc", expert_data, steps=1500, hidden=(64, 64))
    assert dp["success_rate"] >= 0.75 and bc["success_rate"] <= 0.2, (dp["success_rate"], bc["success_rate"])
    assert dp["final_return"] == dp["success_rate"]  # sparse reward: return = success


class ScriptedChunks(DiffusionPolicy):
    """Chunk k of a call is k + index / 100 in every action dimension; records what it was asked."""

    def sample_chunk(self, window, generator=None):
        self.calls.append(window.clone())
        tp = self.config.pred_horizon
        return (torch.arange(tp, dtype=torch.float32) / 100).view(1, tp, 1).repeat(
            window.shape[0], 1, self.action_dim
        ) + 0.1 * len(self.calls)


def test_action_chunks_are_queued_per_sub_env_and_reset_per_episode():
    config = DiffusionPolicyConfig(
        denoiser="mlp",
        width=16,
        depth=1,
        obs_horizon=2,
        pred_horizon=8,
        action_horizon=3,
        normalize_obs=False,
    )
    box3, box2 = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2,))
    agent = ScriptedChunks(config, box3, box2, CPU)
    agent.calls = []
    obs = [torch.full((2, 3), float(i)) for i in range(10)]
    agent.reset_episodes(np.ones(2, dtype=bool))
    first = agent.act(obs[0])
    assert len(agent.calls) == 1 and agent.calls[0].shape == (2, 2, 3)
    assert torch.equal(agent.calls[0], torch.zeros(2, 2, 3))  # window padded with the first obs
    # Executed actions start at chunk index To - 1 = 1 and take Ta = 3 steps.
    assert torch.allclose(first, torch.full((2, 2), 0.1 + 0.01))
    assert torch.allclose(agent.act(obs[1]), torch.full((2, 2), 0.1 + 0.02))
    assert torch.allclose(agent.act(obs[2]), torch.full((2, 2), 0.1 + 0.03))
    assert len(agent.calls) == 1
    agent.act(obs[3])  # the queue ran out: both sub-envs resample, seeing the last two observations
    assert len(agent.calls) == 2 and torch.equal(agent.calls[1][:, :, 0], torch.tensor([[2.0, 3.0]] * 2))
    agent.reset_episodes(np.array([False, True]))  # sub-env 1's episode ended
    action = agent.act(obs[4])
    assert len(agent.calls) == 3 and agent.calls[2].shape == (1, 2, 3)  # only sub-env 1 resamples
    assert torch.equal(agent.calls[2][0, :, 0], torch.tensor([4.0, 4.0]))  # a fresh window
    assert torch.allclose(action, torch.tensor([[0.2 + 0.02] * 2, [0.3 + 0.01] * 2]))
    agent.act(torch.zeros(3, 3))  # a different number of sub-envs starts afresh
    assert agent.calls[-1].shape == (3, 2, 3)


def test_actions_stay_within_the_box_bounds(expert_data):
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 0.5], np.float32)
    box = gym.spaces.Box(low, high)
    for family in ("diffusion", "flow"):
        config = DiffusionPolicyConfig(family=family, denoiser="mlp", width=16, depth=1)
        agent = DiffusionPolicy(config, spaces()[0], box, CPU)
        agent.ema.module.net.out.bias.data.fill_(5.0)  # a wildly wrong network
        actions = torch.cat([agent.act(torch.randn(16, OBS_DIM)) for _ in range(3)])
        assert (actions >= torch.as_tensor(low)).all() and (actions <= torch.as_tensor(high)).all()
    # An unbounded Box is scaled by the dataset's action range.
    free = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    agent = DiffusionPolicy(DiffusionPolicyConfig(denoiser="mlp", width=16, depth=1), spaces()[0], free, CPU)
    agent.prepare(expert_data)
    assert torch.equal(agent.action_scaler.low, torch.as_tensor(expert_data.actions.min(0)))


@pytest.mark.parametrize("family", ["diffusion", "flow", "shortcut"])
def test_checkpoint_round_trip_gives_identical_actions(tmp_path, expert_data, family):
    config = DiffusionPolicyConfig(family=family, denoiser="mlp", width=32, depth=1, batch_size=16)
    agent = DiffusionPolicy(config, *spaces(), CPU, total_steps=10)
    agent.prepare(expert_data)
    sampler = agent.make_sampler(expert_data, CPU, 0)
    for _ in range(3):
        metrics = agent.update(sampler.sample(config.batch_size))
    assert torch.isfinite(metrics["losses/denoise"]) and agent.ema.updates == 3
    save_checkpoint_dir(tmp_path / "ckpt", {"agent": agent.state_dict()}, {"algo": "diffusion_policy"})
    state, _ = load_checkpoint(tmp_path / "ckpt", CPU)
    clone = DiffusionPolicy(config, *spaces(), CPU, total_steps=10)
    clone.load_state_dict(state["agent"])
    assert clone.ema.updates == 3 and clone.num_updates == 3
    obs = torch.as_tensor(expert_data.observations[:5])
    assert torch.equal(agent.act(obs), clone.act(obs))  # the sampling generator is checkpointed too
    for a in (agent, clone):
        a.generator.manual_seed(7)
        a.reset_episodes(np.ones(5, dtype=bool))
    assert torch.equal(agent.act(obs), clone.act(obs))


def test_unet_denoiser_bf16_and_masked_padding(expert_data):
    config = DiffusionPolicyConfig(
        width=8, depth=2, batch_size=8, precision="bf16", pred_horizon=4, action_horizon=2, mask_padding=True
    )
    agent = DiffusionPolicy(config, *spaces(), CPU, total_steps=2)
    agent.prepare(expert_data)
    before = [p.detach().clone() for p in agent.model.parameters()]
    agent.update(agent.make_sampler(expert_data, CPU, 0).sample(8))
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.model.parameters()))
    assert agent.act(torch.zeros(2, OBS_DIM)).shape == (2, 2)


def test_config_errors_name_the_field():
    for bad, field in (
        ({"action_horizon": 16}, "pred_horizon"),
        ({"family": "gan"}, "family"),
        ({"family": "flow", "solver": "ddim"}, "solver"),
        ({"pred_horizon": 10}, "pred_horizon"),  # unet depth 3 needs a multiple of 4
        ({"family": "shortcut", "sample_steps": 3}, "sample_steps"),
        ({"prediction": "score"}, "prediction"),
    ):
        with pytest.raises(ConfigError, match=field):
            DiffusionPolicyConfig(**bad)
    c = DiffusionPolicyConfig()
    assert (c.eval_solver, c.eval_steps) == ("ddpm", 100)  # the paper's simulation setting
    c = DiffusionPolicyConfig(solver="ddim", num_train_steps=50)
    assert (c.eval_solver, c.eval_steps) == ("ddim", 10)
    assert DiffusionPolicyConfig(family="shortcut").eval_steps == 2


def test_learning_rate_warms_up_then_decays():
    agent = DiffusionPolicy(DiffusionPolicyConfig(denoiser="mlp", width=8, depth=1), *spaces(), CPU, 1500)
    lrs = []
    for n in (0, 499, 1000, 1500):
        agent.num_updates = n
        lrs.append(agent._lr())
    assert lrs == pytest.approx([2e-7, 1e-4, 5e-5, 0.0], abs=1e-12)


@pytest.mark.parametrize("family", ["diffusion", "flow", "shortcut"])
def test_each_family_trains_through_the_cli(tmp_path, expert_data, family):
    path = save_dataset(expert_data, "gendm-test/twopath/expert-v0", root=tmp_path / "datasets")
    out = tmp_path / "run"
    sets = [f"--set={k}={v}" for k, v in (FAST | {"family": family, "batch_size": 16}).items()]
    argv = ["train", "diffusion_policy", "--dataset", str(path), "--steps", "4", "--out", str(out)]
    assert main([*argv, *sets, "--eval-every", "4", "--eval-episodes", "2", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["grad_steps"] == 4 and summary["success_rate"] is not None
    assert summary["config"]["family"] == family


def test_collecting_from_a_checkpoint_resets_the_chunk_queue_per_episode(tmp_path, expert_data, monkeypatch):
    fit(tmp_path, "diffusion_policy", expert_data, steps=2, episodes=1, **FAST)
    resets = []
    monkeypatch.setattr(DiffusionPolicy, "reset_episodes", lambda self, mask: resets.append(mask.copy()))
    policy, info = checkpoint_policy(tmp_path / "diffusion_policy-0", env_id=ENV)
    data = collect(ENV, policy, episodes=3, progress=False, policy_info=info)
    assert data.num_episodes == 3 and len(resets) == 3
