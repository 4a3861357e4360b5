import gymnasium as gym
import numpy as np
import pytest
import torch

from gendm.agents.sac import SquashedGaussianActor
from gendm.core.config import apply_overrides
from gendm.core.errors import UnknownNameError
from gendm.data import ReplayBuffer, RolloutBuffer
from gendm.train import TrainSettings, all_methods, train

ENVS = {"sac": "Pendulum-v1", "td3": "Pendulum-v1", "dqn": "CartPole-v1", "ppo": "CartPole-v1"}


def _agent(name, env_id, **overrides):
    spec = all_methods().get(name)
    env = gym.make(env_id)
    cfg = apply_overrides(spec.config_cls(), overrides)
    return spec.builder(
        cfg, env.observation_space, env.action_space, torch.device("cpu"), total_steps=1000
    ), env


def _batch(agent, env, n=64):
    obs_dim = env.observation_space.shape[0]
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    buf = ReplayBuffer(
        256, (obs_dim,), env.action_space.shape, action_dtype=torch.long if discrete else torch.float32
    )
    acts = [env.action_space.sample() for _ in range(n)]
    buf.add(
        torch.randn(n, obs_dim),
        torch.tensor(np.array(acts)),
        torch.randn(n),
        torch.randn(n, obs_dim),
        torch.zeros(n),
        torch.zeros(n),
    )
    return buf.sample(32)


def test_unknown_algorithm_suggests_close_names():
    with pytest.raises(UnknownNameError, match="Did you mean: sac"):
        all_methods().get("sca")


@pytest.mark.parametrize("name", ["sac", "td3", "dqn"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_off_policy_update_and_actions_in_bounds(name, precision):
    agent, env = _agent(name, ENVS[name], precision=precision, batch_size=32)
    obs = torch.randn(5, env.observation_space.shape[0])
    for det in (True, False):
        a = agent.act(obs, deterministic=det)
        assert a.shape[0] == 5 and env.action_space.contains(a[0].numpy().astype(env.action_space.dtype))
    before = [p.detach().clone() for m in agent.modules() for p in m.parameters()]
    metrics = agent.update(_batch(agent, env))
    assert metrics and all(torch.isfinite(v) for v in metrics.values())
    after = [p for m in agent.modules() for p in m.parameters()]
    assert any(not torch.equal(b, a) for b, a in zip(before, after))


def test_sac_with_a_fixed_temperature_keeps_it_and_the_fast_adam_path():
    agent, env = _agent("sac", ENVS["sac"], batch_size=32, autotune=False, init_temperature=0.2)
    for _ in range(3):
        agent.update(_batch(agent, env))
    assert agent.log_alpha.exp().item() == pytest.approx(0.2)
    assert agent.opt._cached is not None  # no parameter without a gradient: FusedAdam's direct path


def test_sac_acts_with_the_draw_of_its_sampling_pass():
    actor = SquashedGaussianActor(3, 2, (16,), -20.0, 2.0)
    obs = torch.randn(5, 3)
    torch.manual_seed(1)
    want, _ = actor(obs)
    torch.manual_seed(1)
    assert torch.equal(actor.act(obs), want)
    assert torch.equal(actor.act(obs, deterministic=True), actor(obs, deterministic=True)[0])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_ppo_update_on_a_rollout(env_id):
    agent, env = _agent("ppo", env_id, num_envs=2, num_steps=8, num_minibatches=2)
    obs_dim = env.observation_space.shape[0]
    roll = RolloutBuffer(
        8,
        2,
        (obs_dim,),
        env.action_space.shape,
        action_dtype=torch.long if env_id == "CartPole-v1" else torch.float32,
    )
    for _ in range(8):
        obs = torch.randn(2, obs_dim)
        a, logp, v = agent.act_with_value(obs)
        roll.add(obs, a, logp, torch.randn(2), torch.zeros(2), v)
    roll.compute_gae(torch.zeros(2), 0.99, 0.95)
    metrics = agent.update(roll)
    assert agent.num_updates == 4 * 2 and all(torch.isfinite(v) for v in metrics.values())


def test_ppo_anneals_its_learning_rate_as_cleanrl_does():
    """Iteration i of K runs at lr * (1 - (i - 1) / K): the full rate first, lr / K last (never 0)."""
    agent, env = _agent("ppo", "CartPole-v1", num_envs=2, num_steps=8, num_minibatches=2)
    agent.total_steps = 3 * 16  # three rollouts of 2 envs x 8 steps
    roll = RolloutBuffer(8, 2, env.observation_space.shape, env.action_space.shape, action_dtype=torch.long)
    rates = []
    for iteration in range(1, 4):
        for _ in range(8):
            obs = torch.randn(2, env.observation_space.shape[0])
            a, logp, v = agent.act_with_value(obs)
            roll.add(obs, a, logp, torch.randn(2), torch.zeros(2), v)
        roll.compute_gae(torch.zeros(2), 0.99, 0.95)
        agent.env_steps = iteration * 16  # the loop counts the rollout's env steps before updating
        agent.update(roll)
        rates.append(agent.opt.param_groups[0]["lr"])
        roll.reset()
    lr = agent.config.learning_rate
    assert rates == pytest.approx([lr, lr * 2 / 3, lr / 3])


@pytest.mark.parametrize("name", sorted(ENVS))
def test_state_dict_roundtrip_reproduces_actions(name):
    agent, env = _agent(name, ENVS[name])
    if name != "ppo":
        agent.update(_batch(agent, env))
    other, _ = _agent(name, ENVS[name])
    other.load_state_dict(agent.state_dict())
    obs = torch.randn(4, env.observation_space.shape[0])
    assert torch.equal(agent.act(obs, deterministic=True), other.act(obs, deterministic=True))


# A learner must improve on a tiny task. Thresholds sit far above a random policy (Pendulum about
# -1230, CartPole about 22; measured references in gendm.envs.references) and below typical results.
LEARNING = [
    ("sac", "Pendulum-v1", 6000, {"learning_rate": 1e-3, "learning_starts": 500, "hidden": (64, 64)}, -700),
    (
        "sac",
        "Pendulum-v1",
        6000,
        {"learning_rate": 1e-3, "learning_starts": 500, "hidden": (64, 64), "precision": "bf16"},
        -700,
    ),
    ("td3", "Pendulum-v1", 6000, {"learning_rate": 1e-3, "learning_starts": 500, "hidden": (64, 64)}, -700),
    ("ppo", "CartPole-v1", 30000, {}, 150),
    (
        "dqn",
        "CartPole-v1",
        20000,
        {
            "learning_starts": 1000,
            "train_freq": 4,
            "exploration_fraction": 0.2,
            "target_network_frequency": 400,
        },
        120,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, env_id, steps, overrides, threshold",
    LEARNING,
    ids=[x[0] + ("-bf16" if x[3].get("precision") == "bf16" else "") for x in LEARNING],
)
def test_learner_improves_on_a_tiny_task(tmp_path, name, env_id, steps, overrides, threshold):
    s = train(
        TrainSettings(
            name,
            env_id,
            steps=steps,
            seed=1,
            out_dir=tmp_path,
            overrides=overrides,
            eval_every=steps,
            eval_episodes=5,
            progress=False,
            tensorboard=False,
        )
    )
    first, last = s["curve"][0]["return_mean"], s["final_return"]
    assert last > threshold and last > first, s["curve"]


@pytest.mark.slow
def test_compile_switch_gives_the_same_loss_as_eager():
    eager, env = _agent("dqn", "CartPole-v1", batch_size=32)
    compiled, _ = _agent("dqn", "CartPole-v1", batch_size=32, compile=True)
    compiled.load_state_dict(eager.state_dict())
    batch = _batch(eager, env)
    loss_e, _ = eager._loss(batch)
    loss_c, _ = compiled._loss(batch)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(torch.stack(list(compiled.update(batch).values()))).all()
