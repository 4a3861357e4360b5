"""The steer operator on toys with known rewards and known tilted targets."""

from __future__ import annotations

import pytest
import torch

from gendm.core.errors import ConfigError
from gendm.generative import GaussianDiffusion
from gendm.steering import steer
from tests.test_generative import CENTERS, NET, PROBS, mode_masses, train


@pytest.fixture(scope="module")
def model():
    return train(GaussianDiffusion("mlp", (2,), prediction="v", net_kwargs=NET), steps=1500)


def reward_near(target):
    return lambda x, cond: -((x - target) ** 2).sum(-1)


def test_expected_reward_rises_with_the_number_of_candidates(model):
    reward = reward_near(torch.tensor([2.0, 2.0]))
    means = []
    for n in (1, 4, 16):
        res = steer(
            model,
            reward,
            num_candidates=n,
            batch_size=300,
            solver="ddim",
            steps=10,
            generator=torch.Generator().manual_seed(n),
        )
        assert res.samples.shape == (300, 2) and res.candidates.shape == (300, n, 2)
        assert torch.allclose(res.scores, reward(res.samples, None))
        means.append(float(res.scores.mean()))
    assert means[0] < means[1] < means[2], means
    assert means[2] > -1.0  # with 16 candidates nearly every context finds the (2, 2) mode


def test_a_callable_proposal_is_reranked_per_context():
    """V-GPS shape: any policy's proposals for each observation, re-ranked by a Q-function."""
    obs = torch.tensor([[0.0], [5.0], [-3.0]])

    def propose(obs_rep, n):
        return obs_rep + torch.randn(n, 1, generator=torch.Generator().manual_seed(0))

    def q(actions, obs_rep):  # best action = observation + 1
        return -((actions - (obs_rep + 1.0)) ** 2).squeeze(-1)

    best = steer(propose, q, num_candidates=64, cond=obs)
    one = steer(propose, q, num_candidates=1, cond=obs)
    assert ((best.samples - (obs + 1)).abs() < 0.3).all()
    assert (best.scores >= one.scores).all()


def test_softmax_selector_interpolates_between_sampling_and_argmax(model):
    reward = reward_near(torch.tensor([2.0, 2.0]))
    kw = dict(num_candidates=8, batch_size=300, solver="ddim", steps=10)
    hot = steer(
        model, reward, selector="softmax", temperature=100.0, generator=torch.Generator().manual_seed(0), **kw
    )
    cold = steer(
        model, reward, selector="softmax", temperature=0.01, generator=torch.Generator().manual_seed(0), **kw
    )
    arg = steer(model, reward, generator=torch.Generator().manual_seed(0), **kw)
    assert float(hot.scores.mean()) < float(cold.scores.mean())
    assert abs(float(cold.scores.mean()) - float(arg.scores.mean())) < 0.2


def tilted_masses(samples: torch.Tensor, reward, beta: float) -> torch.Tensor:
    """Importance-sampling reference: mode masses of p(x) exp(r(x) / beta) from samples of p."""
    w = torch.softmax(reward(samples, None) / beta, dim=0)
    modes = torch.cdist(samples, CENTERS).argmin(1)
    return torch.zeros(3).index_add_(0, modes, w)


def test_particle_resampling_matches_the_tilted_target(model):
    def reward(x, cond):
        return 0.25 * x[:, 0]

    beta = 1.0
    reference = model.sample(20000, solver="ddpm", steps=20, generator=torch.Generator().manual_seed(0))
    target = tilted_masses(reference, reward, beta)
    # Analytically: masses 0.5, 0.3, 0.2 times exp(+-0.5) -> about 0.33, 0.54, 0.13.
    assert torch.allclose(target, torch.tensor([0.33, 0.54, 0.13]), atol=0.06)  # the model is not exact
    res = steer(
        model,
        reward,
        num_candidates=4000,
        batch_size=1,
        selector="particles",
        temperature=beta,
        every=2,
        ess_threshold=0.9,
        solver="ddpm",
        steps=20,
        generator=torch.Generator().manual_seed(1),
    )
    steered = mode_masses(res.candidates[0])
    assert res.resamples > 0 and len(res.ess) > 0
    assert torch.allclose(steered, target, atol=0.05), (steered.tolist(), target.tolist())
    assert not torch.allclose(steered, PROBS, atol=0.05)  # and far from the untilted model


def test_intermediate_argmax_is_greedy_search(model):
    reward = reward_near(torch.tensor([-2.0, 2.0]))  # the smallest mode
    kw = dict(num_candidates=8, batch_size=200, solver="ddpm", steps=20)
    end_only = steer(model, reward, generator=torch.Generator().manual_seed(0), **kw)
    greedy = steer(model, reward, every=1, generator=torch.Generator().manual_seed(0), **kw)
    assert float(greedy.scores.mean()) >= float(end_only.scores.mean()) - 0.05
    assert float(mode_masses(greedy.samples)[2]) > 0.9


def test_bad_arguments_are_refused(model):
    with pytest.raises(ConfigError, match="selector"):
        steer(model, reward_near(torch.zeros(2)), num_candidates=2, batch_size=1, selector="best")
    with pytest.raises(ConfigError, match="GenerativeModel"):
        steer(
            lambda c, n: torch.zeros(n, 2),
            reward_near(torch.zeros(2)),
            num_candidates=2,
            batch_size=1,
            every=1,
        )
    with pytest.raises(ConfigError, match="cond"):
        steer(model, reward_near(torch.zeros(2)), num_candidates=2)
