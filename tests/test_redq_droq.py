"""REDQ and DroQ (agents/redq.py, agents/droq.py): SAC's reference update with REDQ's random-subset
target (``SACConfig.target_subset``) and the critics' mean in the actor loss (``actor_q``), the
hand-derived update refusing both, and each method improving on Pendulum in a tiny budget."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from gendm.agents.droq import DroQConfig
from gendm.agents.redq import REDQConfig
from gendm.agents.sac import SAC, Critics, SACConfig
from gendm.core.config import apply_overrides
from gendm.core.errors import ConfigError
from gendm.core.methods import METHODS
from gendm.data.replay import Batch
from gendm.train import TrainSettings, train

OBS = gym.spaces.Box(-np.ones(3, np.float32), np.ones(3, np.float32))
ACT = gym.spaces.Box(-2 * np.ones(1, np.float32), 2 * np.ones(1, np.float32))
N = 64


def _redq(**config) -> SAC:
    return SAC(REDQConfig(hidden=(32, 32), **config), OBS, ACT, torch.device("cpu"))


def _batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs, next_obs = torch.randn(N, 3, generator=g), torch.randn(N, 3, generator=g)
    actions = torch.rand(N, 1, generator=g) * 4 - 2
    terminations = (torch.rand(N, generator=g) < 0.2).float()
    return Batch(obs, actions, torch.randn(N, generator=g), next_obs, terminations, torch.zeros(N))


def _member_q(agent: SAC, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Every target critic alone (EnsembleLinear's single-member path), ``(members, batch)``."""
    x = torch.cat([obs, actions], -1)
    return torch.stack(
        [agent.critic_target(x, member=i).squeeze(-1) for i in range(agent.config.num_critics)]
    )


def test_the_subset_target_is_the_minimum_over_exactly_the_drawn_members():
    agent = _redq()
    batch, alpha, gamma = _batch(), torch.tensor(0.3), agent.config.gamma
    torch.manual_seed(0)
    members = agent._target_members()
    assert members.shape == (2,) and len(set(members.tolist())) == 2
    assert all(0 <= int(m) < 10 for m in members)

    torch.manual_seed(5)
    got = agent._soft_target(batch, alpha, members)
    torch.manual_seed(5)  # the same next actions, by hand, with each member evaluated alone
    with torch.no_grad():
        next_actions, next_log_prob = agent.actor(batch.next_obs)
        q = _member_q(agent, batch.next_obs, next_actions)
    chosen = torch.minimum(q[int(members[0])], q[int(members[1])])
    want = batch.rewards + (1 - batch.terminations) * gamma * (chosen - alpha * next_log_prob)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)

    # the members differ, so the subset's minimum is not the minimum over all ten
    everyone = batch.rewards + (1 - batch.terminations) * gamma * (q.min(0).values - alpha * next_log_prob)
    live = batch.terminations == 0
    assert (q.std(0) > 1e-3).all()
    assert (want >= everyone - 1e-6).all() and (want[live] > everyone[live] + 1e-4).float().mean() > 0.5

    # drawn anew each update: over many draws every member takes part, each draw two distinct ones
    draws = [agent._target_members().tolist() for _ in range(300)]
    assert all(len(set(d)) == 2 for d in draws)
    assert {m for d in draws for m in d} == set(range(10)) and len({tuple(sorted(d)) for d in draws}) > 20


def test_the_losses_use_the_drawn_subset_and_the_critics_mean_for_the_actor():
    agent = _redq()
    batch, alpha = _batch(1), torch.tensor(0.3)
    torch.manual_seed(11)
    _, metrics = agent._losses(batch, alpha, update_actor=True)

    torch.manual_seed(11)  # by hand, in the same order of random draws: members, a', then the actor's a~
    with torch.no_grad():
        members = agent._target_members()
        target = agent._soft_target(batch, alpha, members)
        q = agent._q(batch.obs, agent.action_scaler.scale(batch.actions))
        critic_loss = 0.5 * (q - target).pow(2).mean(-1).sum()
        pi, log_prob = agent.actor(batch.obs)
        actor_loss = (alpha * log_prob - agent._q(batch.obs, pi).mean(0)).mean()
        minimum = (alpha * log_prob - agent._q(batch.obs, pi).min(0).values).mean()
    torch.testing.assert_close(metrics["losses/critic"], critic_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(metrics["losses/actor"], actor_loss, rtol=1e-6, atol=1e-6)
    assert abs(float(actor_loss - minimum)) > 1e-4  # the mean and the minimum differ here


def test_the_default_sac_target_is_unchanged_by_the_option():
    agent = SAC(SACConfig(hidden=(32, 32), update="reference"), OBS, ACT, torch.device("cpu"))
    assert agent._target_members() is None
    batch = _batch(2)
    torch.manual_seed(3)
    got = agent._soft_target(batch, torch.tensor(0.5), None)
    torch.manual_seed(3)
    with torch.no_grad():
        next_actions, next_log_prob = agent.actor(batch.next_obs)
        q = agent.critic_target(torch.cat([batch.next_obs, next_actions], -1)).squeeze(-1)
    want = batch.rewards + (1 - batch.terminations) * 0.99 * (q.min(0).values - 0.5 * next_log_prob)
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    "config, field",
    [
        (REDQConfig, "target_subset"),
        (lambda **k: SACConfig(num_critics=4, target_subset=2, **k), "target_subset"),
        (lambda **k: SACConfig(actor_q="mean", **k), "actor_q"),
        (DroQConfig, "critic_layer_norm"),
    ],
)
def test_handgrad_refuses_the_options_naming_the_field_and_auto_picks_the_reference(config, field):
    with pytest.raises(ConfigError, match=f"'{field}'.*update='reference'"):
        config(update="handgrad")
    assert SAC(config(hidden=(8, 8)), OBS, ACT, torch.device("cpu")).update_path == "reference"


def test_handgrad_refusal_through_overrides_and_bad_values_name_the_field():
    with pytest.raises(ConfigError, match="target_subset"):
        apply_overrides(SACConfig(), ["num_critics=10", "target_subset=2", "update=handgrad"])
    for overrides, field in (
        ({"target_subset": 0}, "target_subset"),
        ({"num_critics": 10, "target_subset": 11}, "target_subset"),
        ({"actor_q": "max"}, "actor_q"),
    ):
        with pytest.raises(ConfigError, match=f"'{field}'"):
            SACConfig(**overrides)
    with pytest.raises(ConfigError, match="'target_subset'"):
        REDQConfig(num_critics=1)  # the preset's subset of 2 needs 2 critics


def test_the_methods_are_registered_with_their_papers_defaults():
    redq, droq = METHODS.get("redq"), METHODS.get("droq")
    assert redq.builder is SAC and droq.builder is SAC
    r, d = redq.make_config(), droq.make_config()
    assert (r.num_critics, r.target_subset, r.actor_q, r.gradient_steps, r.policy_frequency) == (
        10,
        2,
        "mean",
        20,
        20,
    )
    assert (d.num_critics, d.target_subset, d.critic_dropout, d.critic_layer_norm) == (2, None, 0.01, True)
    assert (d.actor_q, d.gradient_steps, d.policy_frequency) == ("mean", 20, 20)


# Tiny budgets: 64x64 networks, batch 128, UTD 5 (the actor once per 5 critic steps) for 1500 env steps;
# a random policy scores about -1230 on Pendulum (gendm.envs.references), step 0 about the same.
TINY = {
    "hidden": (64, 64),
    "batch_size": 128,
    "learning_starts": 250,
    "gradient_steps": 5,
    "policy_frequency": 5,
    "learning_rate": 1e-3,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["redq", "droq"])
def test_improves_on_pendulum_in_a_tiny_budget(tmp_path, name):
    s = train(
        TrainSettings(
            name,
            "Pendulum-v1",
            steps=1500,
            seed=1,
            out_dir=tmp_path,
            overrides=TINY,
            eval_every=1500,
            eval_episodes=5,
            progress=False,
            tensorboard=False,
        )
    )
    first, last = s["curve"][0]["return_mean"], s["final_return"]
    assert last > -700 and last > first + 300, s["curve"]


@pytest.mark.parametrize("layer_norm", [False, True])
def test_a_member_subset_evaluates_exactly_those_members(layer_norm):
    critics = Critics(6, 4, (16, 16), layer_norm, 0.0)
    if layer_norm:  # gains that differ per member, so a wrong member's would show
        for norm in critics.norms:
            torch.nn.init.normal_(norm.weight)
            torch.nn.init.normal_(norm.bias)
    x, members = torch.randn(32, 4), torch.tensor([4, 1, 3])
    want = torch.stack([critics(x, member=int(i)) for i in members])
    torch.testing.assert_close(critics(x, member=members), want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        critics(x, detach=True, member=members), critics(x)[members], rtol=1e-6, atol=1e-6
    )
