"""SAC: the hand-derived update (gendm.agents.sac_handgrad) equals the autograd reference
(SAC._losses) from the same weights and batches, in fp32 and bf16; the critic variants (layer norm,
more critics, DroQ dropout) train on the reference path, and the hand-derived path refuses them."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gendm.agents.sac import SAC, SACConfig
from gendm.agents.sac_handgrad import squashed_sample, squashed_sample_backward
from gendm.core.config import apply_overrides
from gendm.core.errors import ConfigError
from gendm.data.replay import Batch

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACT = gym.spaces.Box(np.array([-1.0, -3.0], np.float32), np.array([1.0, 0.0], np.float32))
# 16 rows x 2 action dims: both paths then draw the same noise from torch's CPU generator (one
# (2n, act) draw vs two (n, act) draws agree when n * act is a multiple of 16)
N = 16


def _agent(**config) -> SAC:
    config = {"hidden": (32, 32), "learning_rate": 1e-3, **config}
    return SAC(SACConfig(**config), OBS, ACT, torch.device("cpu"))


def _batches(count: int, seed: int = 0) -> list[Batch]:
    rng = np.random.default_rng(seed)

    def t(*shape):
        return torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32)

    batches = []
    for _ in range(count):
        actions = torch.as_tensor(rng.uniform(ACT.low, ACT.high, (N, 2)), dtype=torch.float32)
        terminations = torch.as_tensor(rng.random(N) < 0.2, dtype=torch.float32)
        batches.append(Batch(t(N, 5), actions, t(N), t(N, 5), terminations, torch.zeros(N)))
    return batches


def _pair(**config) -> tuple[SAC, SAC]:
    """A reference and a hand-derived agent with the same initial weights."""
    reference, handgrad = _agent(update="reference", **config), _agent(update="handgrad", **config)
    handgrad.load_state_dict(reference.state_dict())
    assert (reference.update_path, handgrad.update_path) == ("reference", "handgrad")
    return reference, handgrad


def _params(agent: SAC) -> list[torch.Tensor]:
    return [p.detach().clone() for m in agent.modules() for p in m.parameters()]


def _run(agent: SAC, batches: list[Batch], seed: int = 3) -> list[dict[str, float]]:
    torch.manual_seed(seed)
    return [{k: float(v) for k, v in agent.update(b).items()} for b in batches]


VARIANTS = {
    "default": {},
    "three-critics": {"num_critics": 3},
    "one-critic": {"num_critics": 1},
    "delayed-actor-and-target": {"policy_frequency": 2, "target_network_frequency": 2},
    "fixed-temperature": {"autotune": False, "init_temperature": 0.2},
    "critic-lr-and-entropy": {"critic_learning_rate": 3e-3, "target_entropy": -0.5, "gamma": 0.9},
    "tight-log-std-clamps": {"log_std_min": -0.5, "log_std_max": 0.1},  # many log stds clamped
}


def _trained(agent: SAC) -> list[torch.Tensor]:
    return [p for group in agent.opt.param_groups for p in group["params"]]


@pytest.mark.parametrize("config", VARIANTS.values(), ids=VARIANTS.keys())
def test_hand_derived_update_equals_the_autograd_reference_in_fp32(config):
    reference, handgrad = _pair(**config)
    start = _params(reference)
    for i, batch in enumerate(_batches(6)):  # one update, then several more from where they led
        torch.manual_seed(i)
        want = reference.update(batch)
        torch.manual_seed(i)
        got = handgrad.update(batch)
        assert want.keys() == got.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
        for w, g in zip(_trained(reference), _trained(handgrad), strict=True):
            assert (w.grad is None) == (g.grad is None)
            if w.grad is not None:
                torch.testing.assert_close(g.grad, w.grad, rtol=1e-5, atol=1e-6)
        # Adam divides by the gradient's running size, so tiny gradients' rounding reaches the
        # parameters amplified: atol 1e-5 is 1% of one step at this learning rate
        for w, g in zip(_params(reference), _params(handgrad), strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    moved = [not torch.equal(a, b) for a, b in zip(start, _params(handgrad), strict=True)]
    assert all(moved[:-1])  # every actor, critic and target tensor trained (log alpha: below)
    assert handgrad.num_updates == reference.num_updates == 6
    if config.get("autotune", True):
        assert reference.log_alpha.item() != 0.0
        assert handgrad.log_alpha.item() == pytest.approx(reference.log_alpha.item(), rel=1e-5)


@pytest.mark.filterwarnings("ignore:precision='bf16'")
def test_bf16_hand_derived_update_follows_the_autocast_reference(bf16_path):
    reference, handgrad = _pair(precision="bf16")
    start = _params(reference)
    batches = _batches(5)
    want, got = _run(reference, batches), _run(handgrad, batches)
    for w, g in zip(want, got, strict=True):
        for key in ("losses/critic", "losses/actor", "losses/q_mean", "charts/entropy"):
            assert g[key] == pytest.approx(w[key], rel=1e-2, abs=1e-2), key
    # bf16 rounds differently on the two paths, and Adam's first steps are nearly sign steps, so compare
    # where the parameters went: every tensor's update points the same way
    for s, w, g in zip(start, _params(reference), _params(handgrad), strict=True):
        if s.numel() > 1:
            cosine = F.cosine_similarity((g - s).flatten(), (w - s).flatten(), dim=0, eps=1e-12)
            assert cosine > 0.98, cosine


def test_critic_only_steps_leave_actor_and_temperature_untouched():
    for path in ("reference", "handgrad"):
        agent = _agent(update=path, policy_frequency=2)
        batches = _batches(2)
        agent.update(batches[0])  # update 0 trains the actor; update 1 must not
        actor, log_alpha, critic = _params(agent)[:6], agent.log_alpha.item(), _params(agent)[6:18]
        metrics = agent.update(batches[1])
        assert "losses/actor" not in metrics and "losses/alpha" not in metrics
        assert all(torch.equal(a, b) for a, b in zip(actor, _params(agent)[:6], strict=True)), path
        assert agent.log_alpha.item() == log_alpha
        assert all(not torch.equal(a, b) for a, b in zip(critic, _params(agent)[6:18], strict=True)), path


def test_auto_picks_the_hand_derived_update_for_the_plain_critic_and_the_reference_otherwise():
    assert _agent().update_path == "handgrad"
    assert _agent(num_critics=5).update_path == "handgrad"
    assert _agent(critic_layer_norm=True).update_path == "reference"
    assert _agent(critic_dropout=0.01).update_path == "reference"


@pytest.mark.parametrize("field, value", [("critic_layer_norm", True), ("critic_dropout", 0.01)])
def test_handgrad_refuses_the_critics_it_does_not_cover_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"'{field}'.*update='reference'"):
        SACConfig(update="handgrad", **{field: value})
    with pytest.raises(ConfigError, match=field):  # as the CLI's --set builds it
        apply_overrides(SACConfig(), [f"{field}={value}", "update=handgrad"])
    assert SACConfig(update="reference", **{field: value}).update == "reference"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"update": "fast"}, "update"),
        ({"critic_dropout": 1.0}, "critic_dropout"),
        ({"critic_dropout": -0.1}, "critic_dropout"),
    ],
)
def test_bad_values_of_the_new_fields_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        SACConfig(**overrides)


CRITIC_VARIANTS = {
    "layer-norm": {"critic_layer_norm": True},
    "droq": {"critic_layer_norm": True, "critic_dropout": 0.01},
    "droq-bf16": {"critic_layer_norm": True, "critic_dropout": 0.01, "precision": "bf16"},
    "dropout-alone": {"critic_dropout": 0.1},
    "five-critics": {"num_critics": 5},
    "five-critics-reference": {"num_critics": 5, "update": "reference"},
}


@pytest.mark.parametrize("config", CRITIC_VARIANTS.values(), ids=CRITIC_VARIANTS.keys())
@pytest.mark.filterwarnings("ignore:precision='bf16'")
def test_critic_variants_update_and_fit_a_fixed_batch(config):
    # gamma = 0: the critics regress the rewards, so their loss on one batch must fall well below its start
    agent = _agent(gamma=0.0, **config)
    batch = _batches(1)[0]
    start = _params(agent)
    torch.manual_seed(0)
    losses = [agent.update(batch) for _ in range(300)]
    assert all(torch.isfinite(v).all() for m in losses for v in m.values())
    first = np.mean([float(m["losses/critic"]) for m in losses[:5]])
    last = np.mean([float(m["losses/critic"]) for m in losses[-20:]])
    assert last < 0.3 * first, (first, last)
    assert all(not torch.equal(a, b) for a, b in zip(start, _params(agent), strict=True))
    assert agent.critic(torch.randn(4, 7)).shape == (config.get("num_critics", 2), 4, 1)


def test_layer_norm_and_dropout_are_in_the_critic():
    x = torch.randn(64, 7)
    plain = _agent()
    assert set(plain.critic.state_dict()) == {f"layers.{i}.{k}" for i in range(3) for k in ("weight", "bias")}
    assert torch.equal(plain.critic(x), plain.critic(x))

    normed = _agent(critic_layer_norm=True)
    norms = {"norms.0.weight", "norms.0.bias", "norms.1.weight", "norms.1.bias"}
    assert norms <= set(normed.critic.state_dict())
    assert normed.critic.norms[0].weight.shape == (2, 1, 32)  # a gain per member
    before = normed.critic(x)
    with torch.no_grad():  # a layer norm makes the output blind to the scale of the layer before it
        normed.critic.layers[0].weight.mul_(3.0)
        normed.critic.layers[0].bias.mul_(3.0)
    torch.testing.assert_close(normed.critic(x), before, rtol=1e-4, atol=1e-4)
    plain_before = plain.critic(x)
    with torch.no_grad():
        plain.critic.layers[0].weight.mul_(3.0)
        plain.critic.layers[0].bias.mul_(3.0)
    assert not torch.allclose(plain.critic(x), plain_before, rtol=1e-2, atol=1e-2)

    dropout = _agent(critic_dropout=0.5)
    assert not torch.equal(dropout.critic(x), dropout.critic(x))  # a new mask in every pass


@pytest.mark.filterwarnings("ignore:precision='bf16'")
def test_hand_derived_update_runs_under_torch_compile_in_bf16():
    # (the reference path compiles _losses as TD3 does; a cold compile of its backward costs ~1 min)
    agent = _agent(precision="bf16", compile=True)
    before = _params(agent)
    metrics = agent.update(_batches(1)[0])
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, _params(agent), strict=True))


def test_squashed_sample_matches_the_autograd_formula_including_clamped_log_stds():
    torch.manual_seed(4)
    out = (torch.randn(64, 4) * 4).requires_grad_(True)  # many log stds fall outside [-5, 2]
    noise, grad_a, grad_lp = torch.randn(64, 2), torch.randn(64, 2), torch.randn(64)

    mean, log_std = out.chunk(2, dim=-1)
    log_std = log_std.clamp(-5, 2)
    x = mean + log_std.exp() * noise
    want_lp = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    want_lp = want_lp - (2 * (math.log(2) - x - F.softplus(-2 * x))).sum(-1)
    want_a = torch.tanh(x)

    a, lp, saved = squashed_sample(out.detach(), noise, -5.0, 2.0)
    torch.testing.assert_close(a, want_a)
    torch.testing.assert_close(lp, want_lp)
    for grad_action, grad_log_prob in ((grad_a, grad_lp), (None, grad_lp), (grad_a, None)):
        total = sum(
            (t * g).sum() for t, g in ((want_a, grad_action), (want_lp, grad_log_prob)) if g is not None
        )
        (want,) = torch.autograd.grad(total, out, retain_graph=True)
        torch.testing.assert_close(squashed_sample_backward(saved, grad_action, grad_log_prob), want)
