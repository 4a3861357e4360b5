"""gendm.nn.fused: one-node ReLU MLPs must equal the plain modules (fp32) or autocast over them (bf16),
and row-restricted gradients must equal those of separate passes with detached parameters."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import BF16_PATHS

from gendm.agents.sac import SAC, SACConfig
from gendm.core.precision import force_native_bf16
from gendm.data.replay import Batch
from gendm.nn import EnsembleMLP, mlp
from gendm.nn.fused import fused_ensemble, fused_mlp, supports_fused

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


# fp32, and bf16 on the portable path and (where this CPU has it) the native one
DTYPES = [pytest.param((torch.float32, None), id="fp32")] + [
    pytest.param((torch.bfloat16, p.values[0]), id=f"bf16-{p.id}", marks=p.marks) for p in BF16_PATHS
]


@pytest.fixture
def dtype(request):
    dtype, native = request.param
    with force_native_bf16(native):
        yield dtype


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def _reference(dtype: torch.dtype):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


@pytest.mark.parametrize("dtype", DTYPES, indirect=True)
def test_fused_ensemble_stacked_rows_equal_a_trained_and_a_detached_pass(dtype):
    torch.manual_seed(0)
    ens = EnsembleMLP(2, 5, 1, hidden=(32, 32))
    x_train, x_actor = torch.randn(16, 5), torch.randn(16, 5, requires_grad=True)
    w_train, w_actor = torch.randn(2, 16, 1), torch.randn(2, 16, 1)

    with _reference(dtype):
        loss = (ens(x_train) * w_train).sum() + (ens(x_actor, detach=True) * w_actor).sum()
    loss.backward()
    want_params, want_x = _grads(ens), x_actor.grad.clone()
    with _reference(dtype):
        want_out = ens(torch.cat([x_train, x_actor.detach()]))

    ens.zero_grad()
    x_actor.grad = None
    out = fused_ensemble(ens, torch.cat([x_train, x_actor]), dtype, weight_rows=slice(0, 16))
    (out[:, :16] * w_train).sum().add((out[:, 16:] * w_actor).sum()).backward()

    assert out.dtype == torch.float32 and out.shape == (2, 32, 1)
    torch.testing.assert_close(out, want_out, **TOL[dtype])
    torch.testing.assert_close(x_actor.grad, want_x, **TOL[dtype])
    for got, want in zip(_grads(ens), want_params, strict=True):
        torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, indirect=True)
def test_fused_mlp_only_grad_rows_carry_gradients(dtype):
    torch.manual_seed(1)
    net = mlp(4, 3, (32, 32))
    x_free, x_grad = torch.randn(8, 4), torch.randn(8, 4, requires_grad=True)
    weights = torch.randn(8, 3)

    with _reference(dtype):
        want_out = net(torch.cat([x_free, x_grad.detach()]))
        (net(x_grad) * weights).sum().backward()
    want_params, want_x = _grads(net), x_grad.grad.clone()

    net.zero_grad()
    x_grad.grad = None
    out = fused_mlp(net, torch.cat([x_free, x_grad]), dtype, grad_rows=slice(8, None))
    (out[8:] * weights).sum().backward()

    torch.testing.assert_close(out, want_out, **TOL[dtype])
    torch.testing.assert_close(x_grad.grad, want_x, **TOL[dtype])
    for got, want in zip(_grads(net), want_params, strict=True):
        torch.testing.assert_close(got, want, **TOL[dtype])


def test_bf16_weights_follow_a_fused_adam_step(bf16_path):
    # A fused Adam step leaves parameter version counters unchanged; no stale bf16 copy may survive it.
    torch.manual_seed(2)
    ens, net = EnsembleMLP(2, 3, 1, hidden=(16,)), mlp(3, 2, (16,))
    x = torch.randn(8, 3)
    before = fused_ensemble(ens, x, torch.bfloat16), fused_mlp(net, x, torch.bfloat16)
    opt = torch.optim.Adam([*ens.parameters(), *net.parameters()], lr=0.1, fused=True)
    (before[0].sum() + before[1].sum()).backward()
    opt.step()
    after = fused_ensemble(ens, x, torch.bfloat16), fused_mlp(net, x, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = ens(x), net(x)
    for b, a, w in zip(before, after, want, strict=True):
        assert not torch.allclose(b, a)
        torch.testing.assert_close(a, w, **TOL[torch.bfloat16])


def test_unsupported_networks_are_refused():
    assert supports_fused(mlp(3, 2)) and supports_fused(EnsembleMLP(2, 3, 1))
    assert not supports_fused(mlp(3, 2, activation="tanh"))
    assert not supports_fused(mlp(3, 2, layer_norm=True))
    assert not supports_fused(EnsembleMLP(2, 3, 1, activation="silu"))
    with pytest.raises(ValueError, match="ReLU"):
        fused_ensemble(EnsembleMLP(2, 3, 1, activation="tanh"), torch.randn(4, 3))
    with pytest.raises(ValueError, match="Linear and ReLU"):
        fused_mlp(mlp(3, 2, layer_norm=True), torch.randn(4, 3))


def _reference_sac_losses(agent: SAC, batch: Batch, alpha: torch.Tensor, noise: torch.Tensor):
    """SAC's losses written the plain autograd way: separate actor and critic passes through the
    modules, the squashed Gaussian by its textbook formula, a detached critic for pi."""
    c, n = agent.config, batch.obs.shape[0]
    actions = (batch.actions - agent.action_bias) / agent.action_scale
    mean, log_std = agent.actor.net(torch.cat([batch.next_obs, batch.obs])).chunk(2, -1)
    log_std = log_std.clamp(c.log_std_min, c.log_std_max)
    x = mean + log_std.exp() * noise
    sampled = torch.tanh(x)
    gaussian = torch.distributions.Normal(mean, log_std.exp()).log_prob(x)
    log_probs = (gaussian - torch.log(1 - sampled.pow(2) + 1e-12)).sum(-1)
    with torch.no_grad():
        next_in = torch.cat([batch.next_obs, sampled[:n]], -1)
        next_q = agent.critic_target(next_in).squeeze(-1).min(0).values
        target = batch.rewards + (1 - batch.terminations) * c.gamma * (next_q - alpha * log_probs[:n])
    q = agent.critic(torch.cat([batch.obs, actions], -1)).squeeze(-1)
    pi, log_prob = sampled[n:], log_probs[n:]
    q_pi = agent.critic(torch.cat([batch.obs, pi], -1), detach=True).squeeze(-1)
    critic_loss = 0.5 * (q - target).pow(2).mean(-1).sum()
    actor_loss = (alpha * log_prob - q_pi.min(0).values).mean()
    alpha_loss = -(agent.log_alpha * (log_prob.detach() + agent.target_entropy)).mean()
    return critic_loss, actor_loss, alpha_loss


def _sac_and_batch(**config):
    env = gym.make("Pendulum-v1")
    agent = SAC(
        SACConfig(hidden=(32, 32), **config), env.observation_space, env.action_space, torch.device("cpu")
    )
    rng = np.random.default_rng(0)
    t = lambda *shape: torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32)  # noqa: E731
    batch = Batch(t(16, 3), t(16, 1).clamp(-2, 2), t(16), t(16, 3), torch.zeros(16), torch.zeros(16))
    batch.terminations[::5] = 1
    return agent, batch


def test_sac_hand_derived_gradients_equal_autograd_on_plain_modules():
    agent, batch = _sac_and_batch()
    alpha = agent.log_alpha.detach().exp()
    torch.manual_seed(3)
    got, metrics = agent._gradients(batch, alpha, update_actor=True)
    torch.manual_seed(3)
    losses = _reference_sac_losses(agent, batch, alpha, torch.randn(32, 1))
    want = torch.autograd.grad(sum(losses), agent._trained)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    for key, loss in zip(("losses/critic", "losses/actor", "losses/alpha"), losses, strict=True):
        torch.testing.assert_close(metrics[key], loss.detach())


def test_sac_bf16_gradients_follow_autocast_on_plain_modules(bf16_path):
    agent, batch = _sac_and_batch(precision="bf16")
    alpha = agent.log_alpha.detach().exp()
    torch.manual_seed(3)
    got, _ = agent._gradients(batch, alpha, update_actor=True)
    torch.manual_seed(3)
    with _reference(torch.bfloat16):
        losses = _reference_sac_losses(agent, batch, alpha, torch.randn(32, 1))
    want = torch.autograd.grad(sum(losses), agent._trained)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        cosine = F.cosine_similarity(g.flatten(), w.flatten(), dim=0, eps=1e-12)
        assert cosine > 0.99, cosine


def test_sac_critic_only_step_leaves_the_actor_and_temperature_without_gradients():
    agent, batch = _sac_and_batch(policy_frequency=2)
    alpha = agent.log_alpha.detach().exp()
    torch.manual_seed(3)
    got, _ = agent._gradients(batch, alpha, update_actor=False)
    torch.manual_seed(3)
    critic_loss, _, _ = _reference_sac_losses(agent, batch, alpha, torch.randn(32, 1))
    n_actor = len(agent._actor_params)
    assert all(g is None for g in got[:n_actor]) and got[-1] is None
    want = torch.autograd.grad(critic_loss, agent._critic_params)
    for g, w in zip(got[n_actor:-1], want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    actor_before = [p.detach().clone() for p in agent._actor_params]
    agent.update(batch)  # update 0 trains the actor; update 1 must not
    actor_after = [p.detach().clone() for p in agent._actor_params]
    agent.update(batch)
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, actor_after, strict=True))
    assert all(torch.equal(a, p) for a, p in zip(actor_after, agent._actor_params, strict=True))


def test_sac_update_runs_under_torch_compile_in_bf16():
    env = gym.make("Pendulum-v1")
    agent = SAC(
        SACConfig(hidden=(32, 32), precision="bf16", compile=True),
        env.observation_space,
        env.action_space,
        torch.device("cpu"),
    )
    rng = np.random.default_rng(0)
    t = lambda *shape: torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32)  # noqa: E731
    batch = Batch(t(16, 3), t(16, 1).clamp(-2, 2), t(16), t(16, 3), torch.zeros(16), torch.zeros(16))
    before = [p.detach().clone() for p in agent.critic.parameters()]
    metrics = agent.update(batch)
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.critic.parameters(), strict=True))


def test_squashed_sample_matches_the_autograd_formula_including_clamped_log_stds():
    from gendm.agents.sac import _SquashedSample

    torch.manual_seed(4)
    out = (torch.randn(64, 4) * 4).requires_grad_(True)  # many log stds fall outside [-5, 2]
    noise, grad_a, grad_lp = torch.randn(64, 2), torch.randn(64, 2), torch.randn(64)

    mean, log_std = out.chunk(2, dim=-1)
    log_std = log_std.clamp(-5, 2)
    x = mean + log_std.exp() * noise
    want_lp = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    want_lp = want_lp - (2 * (math.log(2) - x - F.softplus(-2 * x))).sum(-1)
    want_a = torch.tanh(x)
    want_total = (want_a * grad_a).sum() + (want_lp * grad_lp).sum()
    (want_grad,) = torch.autograd.grad(want_total, out, retain_graph=True)

    a, lp = _SquashedSample.apply(out, noise, -5.0, 2.0)
    (grad,) = torch.autograd.grad((a * grad_a).sum() + (lp * grad_lp).sum(), out)
    torch.testing.assert_close(a, want_a)
    torch.testing.assert_close(lp, want_lp)
    torch.testing.assert_close(grad, want_grad)
    (grad_lp_only,) = torch.autograd.grad(_SquashedSample.apply(out, noise, -5.0, 2.0)[1].sum(), out)
    (want_lp_only,) = torch.autograd.grad(want_lp.sum(), out)
    torch.testing.assert_close(grad_lp_only, want_lp_only)
