"""Offline agents learn what they should on tiny tasks: Gaussian BC imitates a unimodal expert and fails
on bimodal demonstrations (the motivating failure); IQL and TD3+BC improve on random behaviour data."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from gendm.agents.iql import IQL, IQLConfig
from gendm.core.errors import ConfigError
from gendm.data.collect import steps_to_dataset
from gendm.envs import make_env
from gendm.envs.multimodal import TwoPathExpert
from gendm.train import TrainSettings, all_methods, train_offline

ENV = "gendm/TwoPathReach-v0"
FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")


class Reach1D(gym.Env):
    """x in [-1, 1]; the action moves x by 0.1 a; reward -|x|; 20 steps. Optimal: head for 0."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1, 1))
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.1 * float(np.clip(action[0], -1, 1)), -1, 1))
        return np.array([self.x], np.float32), -abs(self.x), False, False, {}


gym.register("gendm-test/Reach1D-v0", entry_point=Reach1D, max_episode_steps=20)


def rollout(env_id, policy, episodes, seed=0):
    """Episodes of ``policy(obs, rng)`` as an OfflineDataset."""
    env, rng = make_env(env_id, 1, seed=seed), np.random.default_rng(seed)
    rows = {k: [] for k in FIELDS}
    obs, _ = env.reset(seed=seed)
    finished = 0
    while finished < episodes:
        action = policy(obs, rng)
        next_obs, reward, term, trunc, info = env.step(action)
        last = info["final_obs"][0] if term[0] or trunc[0] else next_obs[0]
        for k, v in zip(FIELDS, (obs[0], action[0], reward[0], last, term[0], trunc[0])):
            rows[k].append(v)
        finished += int(term[0] or trunc[0])
        obs = next_obs
    return steps_to_dataset({k: np.asarray(v) for k, v in rows.items()}, env_id)


def fit(tmp_path, algo, dataset, steps, seed=0, episodes=20, **overrides):
    settings = TrainSettings(
        algo,
        steps=steps,
        seed=seed,
        out_dir=tmp_path / f"{algo}-{seed}",
        eval_every=steps,
        eval_episodes=episodes,
        progress=False,
        tensorboard=False,
        overrides={"hidden": (64, 64)} | overrides,
    )
    return train_offline(settings, dataset=dataset)


def test_gaussian_bc_imitates_a_one_sided_expert(tmp_path):
    data = rollout(ENV, TwoPathExpert(side=1), episodes=50)
    s = fit(tmp_path, "bc", data, steps=1500)
    assert s["success_rate"] >= 0.9 and s["final_return"] >= 0.9 * data.episode_returns().mean()


def test_gaussian_bc_averages_two_modes_into_the_obstacle(tmp_path):
    """The motivating failure: both paths succeed, their mean runs into the disc (default network)."""
    data = rollout(ENV, TwoPathExpert(), episodes=100)
    assert data.episode_returns().mean() > 0.95
    sides = np.sign(data.actions[data.episode_starts, 0])
    assert 0.35 < np.mean(sides > 0) < 0.65  # both modes are in the data
    rates = [
        fit(tmp_path, "bc", data, steps=1500, seed=seed, hidden=(256, 256))["success_rate"] for seed in (0, 1)
    ]
    assert max(rates) < 0.5, rates


@pytest.fixture(scope="module")
def random_reach_data():
    return rollout("gendm-test/Reach1D-v0", lambda obs, rng: rng.uniform(-1, 1, (1, 1)), episodes=200)


@pytest.mark.parametrize("algo", ["iql", "td3bc"])
def test_offline_rl_improves_on_random_behaviour(tmp_path, random_reach_data, algo):
    behaviour = random_reach_data.episode_returns().mean()  # about -10.6; heading for 0 gets about -2
    s = fit(tmp_path, algo, random_reach_data, steps=2000, episodes=20)
    assert s["final_return"] > behaviour + 3.5, (behaviour, s["curve"])  # BC stays near -8


def test_iql_exposes_its_critic_and_scales_returns(random_reach_data):
    env = make_env("gendm-test/Reach1D-v0", 1)
    spaces = env.single_observation_space, env.single_action_space
    agent = IQL(IQLConfig(hidden=(16,), return_scale=1000.0), *spaces, torch.device("cpu"), 100)
    agent.prepare(random_reach_data)
    returns = random_reach_data.episode_returns()
    assert agent.reward_scale == pytest.approx(1000.0 / (returns.max() - returns.min()))
    obs, act = torch.zeros(4, 1), torch.zeros(4, 1)
    assert agent.q_value(obs, act).shape == (4,) and agent.value(obs).shape == (4,)
    for _ in range(3):
        agent.update(agent.make_sampler(random_reach_data, torch.device("cpu"), 0).sample(8))
    assert agent.opt.param_groups[0]["lr"] < 3e-4  # cosine decay of the actor's learning rate


@pytest.mark.parametrize("algo", ["bc", "iql", "td3bc"])
def test_offline_algorithms_are_registered_with_cited_defaults(algo):
    spec = all_methods().get(algo)
    assert spec.family == "offline" and spec.action_spaces == ("box",)
    with pytest.raises(ConfigError, match="batch_size"):
        spec.config_cls(batch_size=0)


def test_defaults_match_d3rlpy():
    from gendm.agents.td3bc import TD3BCConfig

    iql, td3bc = IQLConfig(), TD3BCConfig()
    assert (iql.expectile, iql.temperature, iql.max_weight, iql.tau) == (0.7, 3.0, 100.0, 0.005)
    assert (iql.actor_learning_rate, iql.critic_learning_rate, iql.hidden) == (3e-4, 3e-4, (256, 256))
    assert (td3bc.alpha, td3bc.policy_noise, td3bc.noise_clip, td3bc.policy_delay) == (2.5, 0.2, 0.5, 2)
    assert (td3bc.actor_learning_rate, td3bc.critic_learning_rate, td3bc.tau) == (3e-4, 3e-4, 0.005)
    assert td3bc.normalize_obs and iql.batch_size == td3bc.batch_size == 256


@pytest.mark.parametrize("algo", ["bc", "iql", "td3bc"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_update_changes_parameters_and_state_roundtrips(random_reach_data, algo, precision):
    env = make_env("gendm-test/Reach1D-v0", 1)
    spaces = env.single_observation_space, env.single_action_space
    spec = all_methods().get(algo)
    config = spec.config_cls(hidden=(16, 16), batch_size=32, precision=precision, normalize_obs=True)
    agent = spec.builder(config, *spaces, torch.device("cpu"), 100)
    agent.prepare(random_reach_data)
    assert agent.obs_norm.std.item() == pytest.approx(random_reach_data.observations.std() + 1e-3, rel=1e-4)
    before = [p.detach().clone() for m in agent.modules() for p in m.parameters()]
    sampler = agent.make_sampler(random_reach_data, torch.device("cpu"), 0)
    for _ in range(2):  # TD3+BC updates its actor every second step
        metrics = agent.update(sampler.sample(32))
        assert metrics and all(torch.isfinite(v) for v in metrics.values())
    after = [p for m in agent.modules() for p in m.parameters()]
    assert any(not torch.equal(b, a) for b, a in zip(before, after))
    clone = spec.builder(config, *spaces, torch.device("cpu"), 100)
    clone.load_state_dict(agent.state_dict())
    obs = torch.linspace(-1, 1, 7)[:, None]
    action = agent.act(obs, deterministic=True)
    assert torch.equal(action, clone.act(obs, deterministic=True)) and action.abs().max() <= 1
