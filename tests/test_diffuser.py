"""Diffuser plans on TwoPathReach: the start state is the observation exactly, plans follow the point
mass's dynamics, value guidance and plan sorting pick higher-value plans, and the agent trains through
the offline loop and survives a checkpoint round trip."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from gendm.agents.diffuser import Diffuser, DiffuserConfig, discounted_returns
from gendm.core.checkpoint import load_checkpoint, save_checkpoint
from gendm.core.errors import ConfigError
from gendm.data.collect import collect
from gendm.data.dataset import OfflineDataset
from gendm.envs.multimodal import MIN_FORWARD, SPEED
from gendm.train import TrainSettings, all_methods, train_offline

ENV = "gendm/TwoPathReach-v0"
TINY = {
    "horizon": 8,
    "dims": (16, 32),
    "value_dims": (16, 32),
    "time_dim": 16,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "ema_every": 1,
    "num_plans": 4,
}


def spaces():
    env = gym.make(ENV)
    return env.observation_space, env.action_space


@pytest.fixture(scope="module")
def data():
    """Clean expert episodes (all succeed) plus noisy ones (some crash): returns that J can rank."""
    expert = collect(ENV, "expert", episodes=20, seed=0, progress=False)
    noisy = collect(ENV, "expert", episodes=20, noise=0.5, seed=1, progress=False)
    return OfflineDataset.concatenate([expert, noisy])


@pytest.fixture(scope="module")
def agent(data):
    torch.manual_seed(0)
    agent = Diffuser(DiffuserConfig(**TINY), *spaces(), torch.device("cpu"))
    agent.prepare(data)
    sampler = agent.make_sampler(data, torch.device("cpu"), seed=0)
    for _ in range(600):
        agent.update(sampler.sample(agent.config.batch_size))
    return agent


@pytest.fixture(scope="module")
def starts(data):
    return torch.as_tensor(data.observations[::17][:32])


def test_value_target_is_the_discounted_return_to_the_episode_end():
    rewards = np.array([1.0, 0.0, 2.0, 5.0, 1.0], np.float32)
    ds = OfflineDataset(
        observations=np.zeros((5, 1), np.float32),
        actions=np.zeros((5, 1), np.float32),
        rewards=rewards,
        next_observations=np.zeros((5, 1), np.float32),
        terminations=np.array([0, 0, 1, 0, 0], bool),
        truncations=np.array([0, 0, 0, 0, 1], bool),
        episode_ends=np.array([3, 5]),
        env_id=ENV,
    )
    out = discounted_returns(ds, gamma=0.5, termination_penalty=-10.0)
    np.testing.assert_allclose(out, [1 + 0.25 * -8, 0.5 * -8, -8, 5.5, 1.0])


@pytest.mark.parametrize("planning", ["none", "guided", "sorted", "both"])
def test_every_plan_starts_exactly_at_the_observation(agent, starts, planning):
    plan = agent.plan(starts[:8], planning, num_plans=4)
    assert torch.equal(plan.normalized[:, 0, :2], agent.obs_norm(starts[:8]))
    assert torch.equal(plan.observations[:, 0], starts[:8])
    assert plan.actions.shape == (8, 8, 2) and plan.values.shape == (8,)
    assert plan.actions.abs().max() <= 1.0


def test_plans_follow_the_point_mass_dynamics(agent, starts):
    """pos_{t+1} = pos_t + SPEED (a_x, forward(a_y)): a plan's consecutive states differ by what its
    actions do, and executing its actions from its start reproduces its positions, far more closely
    than with the actions of other plans."""
    torch.manual_seed(1)
    plan = agent.plan(starts, "none")
    obs, act = plan.observations, plan.actions

    def move(pos, a):
        forward = MIN_FORWARD + (1.0 - MIN_FORWARD) * (a[..., 1:] + 1.0) / 2.0
        return (pos + SPEED * torch.cat([a[..., :1], forward], dim=-1)).clamp(-1, 1)

    def step_error(actions):
        return (obs[:, 1:] - move(obs[:, :-1], actions[:, :-1])).norm(dim=-1).mean().item()

    def drift(actions):  # open loop from the start state, as the environment would move
        pos = obs[:, 0]
        for t in range(obs.shape[1] - 1):
            pos = move(pos, actions[:, t])
        return (pos - obs[:, -1]).norm(dim=-1).mean().item()

    shuffled = act[torch.randperm(len(act))]

    assert step_error(act) < 0.6 * step_error(shuffled), (step_error(act), step_error(shuffled))
    assert drift(act) < 0.6 * drift(shuffled), (drift(act), drift(shuffled))


class FinalX(torch.nn.Module):
    """A known value: the normalised sideways position at the end of the plan times ``sign`` (+1: the
    further right the better, -1: the further left)."""

    def __init__(self, sign: float = 1.0) -> None:
        super().__init__()
        self.sign = sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sign * x[:, -1, 0]


def test_guidance_and_sorting_pick_higher_value_plans(agent, data):
    """From the start region the expert goes left or right by a coin flip, so the learned planner can
    propose both ways; a value "end further right" must move plans right of the unguided ones, and
    "end further left" must move them left. How the unguided plans split depends on the trained model
    (from 3% to 50% left across training seeds and CPUs), so every check compares with them, in both
    directions. Margins come from 9 training seeds, 2 more with AVX2-only kernels: the leftward move
    below the unguided mean was >= 1.3 sorted or both and >= 1.0 guided; right-of-zero fractions were
    >= 0.91 and, for sorting, left-of-zero ones >= 0.75. Sorting draws Diffuser's default 64 plans: a
    model that proposes the left way in only 3% of its plans (training seed 0 once the noisy actions
    changed in their last bit) finds a left plan among 16 candidates in 39% of the contexts, among 64
    in 86%; over 8 trained models (seeds 0-3, both datasets) sorting 64 gave left-of-zero >= 0.75 and
    a gap >= 1.6."""
    first = np.concatenate([[0], data.episode_ends[:-1]])
    starts = torch.as_tensor(data.observations[first][:32])
    learned = agent.ema.module["value"]

    def final_x(planning, sign=1.0, **kw):
        agent.ema.module["value"] = FinalX(sign)
        torch.manual_seed(2)
        return agent.plan(starts, planning, **kw).normalized[:, -1, 0]

    try:
        plain = final_x("none")
        for planning, kw, gap in [
            ("sorted", {"num_plans": 64}, 1.0),
            ("guided", {"guide_scale": 10.0}, 0.5),
            ("both", {"num_plans": 64, "guide_scale": 10.0}, 1.0),
        ]:
            right, left = final_x(planning, **kw), final_x(planning, -1.0, **kw)
            assert right.mean() > plain.mean() > left.mean() + gap / 2, (planning, right, plain, left)
            assert right.mean() - left.mean() > gap, (planning, right.mean(), left.mean())
            assert (right > 0).float().mean() > 0.8, (planning, right)
            if planning != "guided":  # sorting finds left plans among the candidates: both ways exist
                assert (left < 0).float().mean() > 0.5, (planning, left)
    finally:
        agent.ema.module["value"] = learned


def test_actions_are_queued_and_reset_with_the_episode(agent, starts):
    agent.config.replan_every = 3
    try:
        agent.reset_episodes(np.ones(2, dtype=bool))
        obs = starts[:2]
        first = agent.act(obs)
        assert first.shape == (2, 2) and agent.queue.left().tolist() == [2, 2]
        queued = agent.queue.actions.clone()
        assert torch.equal(first, queued[:, 0])
        second = agent.act(obs)
        assert torch.equal(second, queued[:, 1]) and agent.queue.left().tolist() == [1, 1]
        agent.reset_episodes(np.array([True, False]))  # env 0's episode ended: it replans now
        third = agent.act(obs)
        assert agent.queue.left().tolist() == [2, 0] and torch.equal(third[1], queued[1, 2])
    finally:
        agent.config.replan_every = 1
        agent.queue = None


def test_checkpoint_round_trip_reproduces_plans(agent, starts, tmp_path):
    save_checkpoint(tmp_path, agent.state_dict())
    state, _ = load_checkpoint(tmp_path)
    clone = Diffuser(DiffuserConfig(**TINY), *spaces(), torch.device("cpu"))
    clone.load_state_dict(state)
    assert clone.num_updates == agent.num_updates == 600
    torch.manual_seed(3)
    a = agent.plan(starts[:4], "both", num_plans=4)
    torch.manual_seed(3)
    b = clone.plan(starts[:4], "both", num_plans=4)
    assert torch.equal(a.normalized, b.normalized) and torch.equal(a.values, b.values)


def test_trains_through_the_offline_loop(data, tmp_path):
    overrides = TINY | {"planning": "sorted", "num_plans": 2, "sampling_steps": 4, "replan_every": 8}
    settings = TrainSettings(
        "diffuser",
        steps=10,
        out_dir=tmp_path / "run",
        eval_every=10,
        eval_episodes=1,
        log_every=5,
        progress=False,
        tensorboard=False,
        overrides=overrides,
    )
    summary = train_offline(settings, dataset=data)
    assert summary["status"] == "ok" and summary["step_unit"] == "grad_steps"
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["dataset_transitions"] == len(data)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("losses/diffusion" in r and "losses/value" in r for r in rows)


def test_registered_with_validated_config():
    spec = all_methods().get("diffuser")
    assert spec.family == "offline" and spec.action_spaces == ("box",)
    c = DiffuserConfig()
    assert (c.horizon, c.num_diffusion_steps, c.prediction, c.dims) == (32, 20, "x0", (32, 64, 128, 256))
    with pytest.raises(ConfigError, match="planning"):
        DiffuserConfig(planning="beam")
    with pytest.raises(ConfigError, match="horizon"):
        DiffuserConfig(horizon=12)  # not a multiple of 8 for four U-Net levels
    with pytest.raises(ConfigError, match="sampling_steps"):
        DiffuserConfig(prediction="eps")  # all 20 steps: the top level's abar ~ 6e-6 diverges
    DiffuserConfig(prediction="eps", sampling_steps=10)
    with pytest.raises(ConfigError, match="replan_every"):
        DiffuserConfig(horizon=8, dims=(16, 32), replan_every=9)
