"""CrossQ and its Batch Renormalization: the layer's train and eval modes, the critics' joint forward
pass sharing its statistics, no target networks, and learning on Pendulum in a tiny budget."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gendm.agents.crossq import CrossQ, CrossQConfig
from gendm.data import ReplayBuffer
from gendm.nn.batchrenorm import BatchRenorm
from gendm.train import TrainSettings, train


def test_train_mode_is_plain_batch_norm_before_the_warmup_ends():
    torch.manual_seed(0)
    layer = BatchRenorm(5, warmup_steps=3)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
        layer.bias.uniform_(-1, 1)
    for _ in range(3):  # r = 1, d = 0: batch statistics (biased variance), whatever the running ones
        x = torch.randn(64, 5) * 3 + 2
        want = F.batch_norm(x, None, None, layer.weight, layer.bias, training=True, eps=layer.eps)
        torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    assert int(layer.steps) == 3
    x = torch.randn(64, 5) * 3 + 2  # warmed up: corrected toward the running statistics
    plain = F.batch_norm(x, None, None, layer.weight, layer.bias, training=True, eps=layer.eps)
    assert not torch.allclose(layer(x), plain, atol=1e-3)


def test_renorm_corrections_are_ioffes_and_clipped():
    layer = BatchRenorm(3, warmup_steps=0, r_max=1.5, d_max=0.5, momentum=0.9)
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([0.0, 10.0, -10.0]))
        layer.running_var.copy_(torch.tensor([1.0, 1.0, 100.0]))
    x = torch.randn(128, 3, generator=torch.Generator().manual_seed(1))
    mean, std = x.mean(0), torch.sqrt(x.var(0, unbiased=False) + layer.eps)
    running_std = torch.sqrt(layer.running_var + layer.eps)
    r = (std / running_std).clamp(1 / 1.5, 1.5)
    d = ((mean - layer.running_mean) / running_std).clamp(-0.5, 0.5)
    want = (x - mean) / std * r + d
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.running_mean, torch.tensor([0.0, 9.0, -9.0]) + 0.1 * mean)


def test_eval_mode_uses_the_running_statistics_and_leaves_them():
    torch.manual_seed(0)
    layer = BatchRenorm(4, members=2)
    for _ in range(20):
        layer(torch.randn(2, 32, 4) * 2 + 1)
    mean, var, steps = layer.running_mean.clone(), layer.running_var.clone(), int(layer.steps)
    assert not torch.equal(mean, torch.zeros_like(mean))
    layer.eval()
    x = torch.randn(2, 7, 4)
    want = (x - mean) / torch.sqrt(var + layer.eps) * layer.weight + layer.bias
    torch.testing.assert_close(layer(x), want)
    torch.testing.assert_close(layer(x[:, :1]), want[:, :1])  # per example: no batch statistics
    assert torch.equal(layer.running_mean, mean) and int(layer.steps) == steps
    state = layer.state_dict()
    assert {"running_mean", "running_var", "steps"} <= set(state)


def _agent(**overrides) -> tuple[CrossQ, gym.Env]:
    env = gym.make("Pendulum-v1")
    config = CrossQConfig(critic_hidden=(32, 32), hidden=(16, 16), batch_size=16, **overrides)
    return CrossQ(config, env.observation_space, env.action_space, torch.device("cpu")), env


def test_the_joint_forward_pass_shares_statistics():
    torch.manual_seed(0)
    agent, _ = _agent()
    current = torch.randn(16, 4)
    q_a = agent.critic(torch.cat([current, torch.randn(16, 4)]), train=True)[:, :16]
    q_b = agent.critic(torch.cat([current, torch.randn(16, 4) + 3]), train=True)[:, :16]
    assert q_a.shape == (2, 16)
    assert not torch.allclose(q_a, q_b), "Q(s, a) in train mode should depend on the next-state half"
    # in eval mode (running statistics) a row's value is its own
    e_a = agent.critic(torch.cat([current, torch.randn(16, 4)]), train=False)[:, :16]
    e_b = agent.critic(torch.cat([current, torch.randn(16, 4) + 3]), train=False)[:, :16]
    torch.testing.assert_close(e_a, e_b)


def test_no_target_network_and_statistics_in_the_checkpoint():
    agent, _ = _agent()
    state = agent.state_dict()
    assert not any("target" in name for name in state), list(state)
    keys = [k for part in ("actor", "critic") for k in state[part]]
    assert not any("target" in k for k in keys)
    assert any(k.endswith("running_mean") for k in state["critic"])
    assert any(k.endswith("running_mean") for k in state["actor"])  # actor_batch_norm=True
    buffer = ReplayBuffer(64, (3,), (1,), torch.device("cpu"), seed=0)
    rng = np.random.default_rng(0)
    for _ in range(64):
        obs, act = rng.normal(size=(1, 3)).astype(np.float32), rng.uniform(-2, 2, (1, 1)).astype(np.float32)
        buffer.add(obs, act, rng.normal(size=1), obs, [False], [False])
    for _ in range(3):
        agent.update(buffer.sample(16))
    # the critics ran in train mode once per update; the actor on the third (SBX's policy delay count)
    assert int(agent.critic.norms[0].steps) == 3 and int(agent.actor.net[0].steps) == 1
    assert not agent.actor.training  # acting stays in eval mode


@pytest.mark.slow
def test_crossq_improves_on_pendulum_in_a_tiny_budget(tmp_path):
    steps = 2500
    s = train(
        TrainSettings(
            "crossq",
            "Pendulum-v1",
            steps=steps,
            seed=1,
            out_dir=tmp_path,
            overrides={"critic_hidden": (256, 256), "learning_starts": 500},
            eval_every=steps,
            eval_episodes=5,
            progress=False,
            tensorboard=False,
        )
    )
    first, last = s["curve"][0]["return_mean"], s["final_return"]
    assert last > -700 and last > first + 300, s["curve"]
