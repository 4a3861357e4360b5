"""The small shared parts of agents: one action scaler, one action-chunk queue, one cosine schedule."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from gendm.agents.acting import ActionQueue
from gendm.agents.base import OfflineAgent, OfflineConfig
from gendm.agents.bc import BC, BCConfig
from gendm.agents.td3 import TD3, TD3Config
from gendm.core.errors import ConfigError
from gendm.data.normalize import ActionScaler

CPU = torch.device("cpu")
OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


def _box(rng: np.random.Generator, dims: int = 4) -> gym.spaces.Box:
    low = rng.uniform(-3, 1, dims).astype(np.float32)
    return gym.spaces.Box(low, low + rng.uniform(0.01, 5, dims).astype(np.float32))


# ------------------------------------------------------------------------------------ ActionScaler
def test_scaler_is_the_box_arithmetic_bit_for_bit():
    """``a * scale + bias`` and its inverse, with scale and bias computed as every agent did before."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        space = _box(rng)
        low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (space.low, space.high))
        scale, bias = (high - low) / 2, (high + low) / 2
        scaler = ActionScaler.from_space(space)
        a = torch.as_tensor(rng.uniform(-1.5, 1.5, (64, 4)).astype(np.float32))
        assert torch.equal(scaler.unscale(a), a * scale + bias)
        assert torch.equal(scaler.unscale(a, clip=True), a.clamp(-1, 1) * scale + bias)
        assert torch.equal(scaler.scale(a), (a - bias) / scale)
        assert torch.equal(scaler.scale(a, clip=True), ((a - bias) / scale).clamp(-1, 1))
        a64 = a.double()  # float64 actions are scaled in float64 (BeT's k-means input)
        assert scaler.scale(a64).dtype == torch.float64
        assert torch.equal(scaler.scale(a64), (a64 - bias.double()) / scale.double())
        x = a.numpy()
        assert isinstance(scaler.scale(x), np.ndarray)
        expected = np.clip(x, -1, 1) * scale.numpy() + bias.numpy()
        np.testing.assert_array_equal(scaler.unscale(x, clip=True), expected)


def test_scaler_state_is_its_bounds_and_loading_rederives_the_map():
    scaler = ActionScaler(-np.ones(2), np.ones(2))
    assert set(scaler.state_dict()) == {"low", "high"}  # Diffusion Policy's checkpoint keys as before
    scaler.load_state_dict(ActionScaler([0.0, -2.0], [2.0, 6.0]).state_dict())
    assert scaler.half_range.tolist() == [1.0, 4.0] and scaler.center.tolist() == [1.0, 2.0]
    assert scaler.unscale(torch.tensor([[1.0, -1.0]])).tolist() == [[2.0, -2.0]]
    with pytest.raises(ConfigError, match="finite Box bounds"):
        ActionScaler.from_space(gym.spaces.Box(-np.inf, np.inf, (2,)))


@pytest.mark.parametrize("agent_cls, config", [(BC, BCConfig(hidden=(8,))), (TD3, TD3Config(hidden=(8,)))])
def test_agents_act_in_the_box_through_the_scaler(agent_cls, config):
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 0.5], np.float32))
    agent = agent_cls(config, OBS, space, CPU)
    assert isinstance(agent.action_scaler, ActionScaler) and "action_scaler" not in agent.parts
    actions = agent.act(torch.randn(32, 3), deterministic=False)
    assert (actions >= torch.as_tensor(space.low)).all() and (actions <= torch.as_tensor(space.high)).all()


# ------------------------------------------------------------------------------------- ActionQueue
def test_queue_refills_empty_rows_pops_in_order_and_clears_per_sub_env():
    q = ActionQueue(3, 2, 1, CPU)
    assert len(q) == 3 and q.shape == (3, 2) and q.empty().tolist() == [0, 1, 2]
    q.fill(q.empty(), torch.tensor([[[0.0], [1.0]], [[10.0], [11.0]], [[20.0], [21.0]]]))
    assert q.pop().flatten().tolist() == [0.0, 10.0, 20.0] and q.left().tolist() == [1, 1, 1]
    q.clear(np.array([False, True, False]))  # sub-env 1's episode ended
    assert q.empty().tolist() == [1]
    q.fill(q.empty(), torch.tensor([[[30.0], [31.0]]]))
    assert q.pop().flatten().tolist() == [1.0, 30.0, 21.0] and q.empty().tolist() == [0, 2]


# ---------------------------------------------------------------------------------- cosine schedule
class _Probe(OfflineAgent):
    pass


def test_cosine_lr_is_iqls_formula_and_diffusion_policys_after_its_warm_up():
    agent = _Probe(OfflineConfig(), OBS, OBS, CPU, total_steps=1000)
    for n in (0, 1, 250, 999, 1000, 5000):
        agent.num_updates = n
        iql = 3e-4 * 0.5 * (1 + math.cos(math.pi * min(n, 1000) / 1000))  # the formula IQL has always used
        assert agent.cosine_lr(3e-4) == iql
    for n in (100, 101, 550, 999, 1000, 1200):  # Diffusion Policy: 100 warm-up steps, then cosine
        agent.num_updates = n
        dp = 1e-4 * 0.5 * (1 + math.cos(math.pi * min(1.0, (n - 100) / 900)))  # its former formula
        assert agent.cosine_lr(1e-4, warmup=100) == pytest.approx(dp, rel=1e-12, abs=1e-20)
    agent.total_steps = None  # unknown length: a 1M-step horizon
    agent.num_updates = 500_000
    assert agent.cosine_lr(1.0) == pytest.approx(0.5)
