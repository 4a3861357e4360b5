import numpy as np
import pytest

from gendm.core.errors import ConfigError, UnknownNameError
from gendm.envs import load_normalization_state, make_env, normalization_state
from gendm.train.evaluate import episode_returns


def test_vector_env_with_seeded_resets():
    env = make_env("CartPole-v1", num_envs=3, seed=1)
    assert env.num_envs == 3 and env.observation_space.shape == (3, 4)
    first = env.reset(seed=5)[0]
    again = make_env("CartPole-v1", num_envs=3, seed=1).reset(seed=5)[0]
    assert np.array_equal(first, again)


def test_unknown_env_suggests_close_ids():
    with pytest.raises(
        UnknownNameError, match=r"Unknown environment 'CartPole-v9'.*Did you mean: .*CartPole-v1"
    ):
        make_env("CartPole-v9")
    with pytest.raises(ConfigError):
        make_env("CartPole-v1", num_envs=0)


def test_episode_statistics_are_raw_returns_even_with_reward_normalisation():
    env = make_env("CartPole-v1", num_envs=2, seed=0, normalize_reward=True)
    env.reset(seed=0)
    finished, step_rewards = [], []
    while len(finished) < 4:
        _, r, _, _, info = env.step(env.action_space.sample())
        step_rewards.append(r)
        finished += episode_returns(info)
    assert all(ret == length for ret, length in finished)  # CartPole pays exactly 1 per step
    assert not np.allclose(np.concatenate(step_rewards), 1.0)  # ... while the agent sees scaled rewards


def test_normalisation_statistics_roundtrip_and_freeze():
    env = make_env("Pendulum-v1", num_envs=2, seed=0, normalize_obs=True, normalize_reward=True)
    env.reset(seed=0)
    for _ in range(50):
        env.step(env.action_space.sample())
    state = normalization_state(env)
    assert {"obs/0/mean", "obs/1/var", "ret/0/var"} <= set(state)
    fresh = make_env("Pendulum-v1", num_envs=1, seed=1, normalize_obs=True)
    load_normalization_state(fresh, state, freeze=True)
    fresh.reset(seed=0)
    for _ in range(20):
        fresh.step(fresh.action_space.sample())
    after = normalization_state(fresh)
    np.testing.assert_allclose(after["obs/0/mean"], state["obs/0/mean"])  # frozen: unchanged
    np.testing.assert_allclose(after["obs/0/count"], state["obs/0/count"])
