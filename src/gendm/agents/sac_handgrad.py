"""SAC's update with hand-derived gradients and no autograd graph: the speed path of ``agents/sac.py``.

``SAC._losses`` is the reference: the three losses as plain autograd code. ``HandGradients`` computes
the gradients of the same losses by hand (the derivation is in ``HandGradients.gradients``), so an
update builds no graph, and stacks passes that want different gradients (``gendm.nn.fused``): one
actor pass over ``[next_obs; obs]`` and one critic pass over ``[(obs, a); (obs, pi)]``, the critic's
weight gradients taken from the first rows only. tests/test_sac.py checks parameters and losses
against the reference path after one and several updates (fp32 and bf16).

It covers the default critic (ReLU, no layer norm, no dropout), any ``num_critics``, both precisions
and ``compile``; ``SACConfig.update="auto"`` uses it wherever it covers the config. Measured on an AMD
EPYC with AVX512-BF16, one thread, best of 5 rounds, milliseconds per update at batch 256 and
256x256 networks (HalfCheetah: 17-dim observations, 6-dim actions; Pendulum: 3 and 1), hand-derived
vs reference: HalfCheetah 2 critics fp32 8.8-9.5 vs 9.4-11.0, bf16 5.6-6.7 vs 7.4-8.7; 5 critics fp32
18.3 vs 21.3, bf16 12.7 vs 14.9; 10 critics fp32 32.7 vs 39.0, bf16 21.8 vs 24.5; Pendulum 2 critics
fp32 8.9 vs 9.1, bf16 5.7 vs 6.8 (``benchmarks/loop_parts.py`` and ``--set update=reference`` give the
HalfCheetah 2-critic pair; the rest is from a one-off script timing both paths interleaved). CUDA is
not measured: there, too, ``auto`` keeps the hand-derived path (SAC's only path before the switch).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from gendm.data.replay import Batch
from gendm.nn.fused import (
    cast_params,
    ensemble_backward,
    ensemble_forward,
    layer_params,
    mlp_backward,
    mlp_forward,
)

if TYPE_CHECKING:
    from gendm.agents.sac import SAC


def squashed_sample(
    net_out: torch.Tensor, noise: torch.Tensor, log_std_min: float, log_std_max: float
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """``a = tanh(mean + exp(clamp(log_std)) * noise)``, ``log pi(a)``, and what
    ``squashed_sample_backward`` needs, for ``net_out = (mean, log_std)``.

    log pi(a) = log N(x; mean, std) - log|d tanh(x)/dx|, the latter written stably as
    2(log 2 - x - softplus(-2x)).
    """
    mean, raw_log_std = net_out.chunk(2, dim=-1)
    log_std = raw_log_std.clamp(log_std_min, log_std_max)
    scaled_noise = log_std.exp() * noise
    x = mean + scaled_noise
    action = torch.tanh(x)
    per_dim = 2 * (x + F.softplus(-2 * x)) - 0.5 * noise.square() - log_std
    constant = noise.shape[-1] * (0.5 * math.log(2 * math.pi) + 2 * math.log(2))
    inside = (raw_log_std >= log_std_min) & (raw_log_std <= log_std_max)
    return action, per_dim.sum(-1) - constant, (action, scaled_noise, inside)


def squashed_sample_backward(
    saved: tuple[torch.Tensor, ...], grad_action: torch.Tensor | None, grad_log_prob: torch.Tensor | None
) -> torch.Tensor:
    """The gradient w.r.t. ``net_out`` of ``squashed_sample`` with the noise held fixed
    (reparameterisation). The Gaussian term, written in the noise, does not depend on x, so
    d log pi/dx = 2a from the tanh term; d a/dx = 1 - a^2; dx/d mean = 1, dx/d log_std = std * noise,
    and log pi has -1 in log_std directly; clamped log stds get no gradient."""
    action, scaled_noise, inside = saved
    grad_x = torch.zeros_like(action)
    if grad_action is not None:
        grad_x = grad_action * (1 - action.square())
    if grad_log_prob is not None:
        grad_x = grad_x + 2 * action * grad_log_prob.unsqueeze(-1)
    grad_log_std = grad_x * scaled_noise
    if grad_log_prob is not None:
        grad_log_std = grad_log_std - grad_log_prob.unsqueeze(-1)
    return torch.cat([grad_x, grad_log_std * inside], -1)


class HandGradients:
    """The gradients of ``agent``'s three losses, derived by hand, written into ``.grad``."""

    def __init__(self, agent: SAC) -> None:
        self.agent = agent
        self.actor_params = layer_params(agent.actor.net)
        self.critic_params = layer_params(agent.critic.layers)
        self.target_params = layer_params(agent.critic_target.layers)
        self.trained = [*self.actor_params, *self.critic_params, agent.log_alpha]
        self.gradients = agent.maybe_compile(self.gradients)

    def set_gradients(self, batch: Batch, alpha: torch.Tensor, update_actor: bool) -> dict[str, torch.Tensor]:
        """Set every trained parameter's ``.grad`` (None where a loss is skipped); returns the metrics."""
        grads, metrics = self.gradients(batch, alpha, update_actor)
        for param, grad in zip(self.trained, grads, strict=True):
            param.grad = grad
        return metrics

    @torch.no_grad()
    def gradients(
        self, batch: Batch, alpha: torch.Tensor, update_actor: bool
    ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        """Gradients of the summed critic, actor and temperature losses w.r.t. ``self.trained``
        (None where a loss is skipped), with no autograd graph:

        - critic: ``0.5 sum_m mean_i (Q_m(s, a) - y)^2``, ``y = r + gamma (1 - term) (min_m Q'_m(s', a')
          - alpha log pi(a'|s'))``, ``a' ~ pi(s')``: d/dQ_m = (Q_m - y) / n;
        - actor: ``mean_i(alpha log pi(a~|s) - min_m Q_m(s, a~))``, ``a~ ~ pi(s)`` reparameterised, the
          critic held fixed: d/dQ_m = -1/n for the minimising member, d/d log pi = alpha / n;
        - temperature: ``-mean_i(log alpha (log pi(a~|s) + target_entropy))``.

        The noise of both actor passes is one draw of ``(2n, act_dim)`` (the reference draws
        ``(n, act_dim)`` twice: the same numbers from torch's CPU generator when ``n * act_dim`` is a
        multiple of 16, as at the default batch size of 256).
        """
        agent = self.agent
        c = agent.config
        n, obs_dim = batch.obs.shape
        dtype = torch.bfloat16 if agent.precision == "bf16" else torch.float32
        actions = agent.action_scaler.scale(batch.actions)
        actor_copies = cast_params(self.actor_params, dtype)
        actor_obs = torch.cat([batch.next_obs, batch.obs]) if update_actor else batch.next_obs
        out, actor_saved = mlp_forward(actor_obs, actor_copies, self.actor_params)
        noise = torch.randn_like(out[:, : out.shape[1] // 2])
        sampled, log_probs, sample_saved = squashed_sample(out, noise, c.log_std_min, c.log_std_max)

        next_in = torch.cat([batch.next_obs, sampled[:n]], -1)
        target_copies = cast_params(self.target_params, dtype)
        next_q = ensemble_forward(next_in, target_copies, self.target_params)[0]
        next_q = next_q.squeeze(-1).min(0).values
        target = batch.rewards + (1 - batch.terminations) * c.gamma * (next_q - alpha * log_probs[:n])

        critic_in = torch.cat([batch.obs, actions], -1)
        if update_actor:
            critic_in = torch.cat([critic_in, torch.cat([batch.obs, sampled[n:]], -1)])
        critic_copies = cast_params(self.critic_params, dtype)
        q_all, critic_saved = ensemble_forward(critic_in, critic_copies, self.critic_params)
        q_all = q_all.squeeze(-1)
        td = q_all[:, :n] - target
        grad_q = torch.zeros_like(q_all)
        grad_q[:, :n] = td / n
        critic_loss = 0.5 * td.square().mean(-1).sum()
        metrics = {"losses/critic": critic_loss, "losses/q_mean": q_all[:, :n].mean()}
        if not update_actor:
            critic_grads, _ = ensemble_backward(
                critic_saved, critic_copies, grad_q.unsqueeze(-1), slice(0, n)
            )
            return [None] * len(self.actor_params) + critic_grads + [None], metrics

        min_q_pi, argmin = q_all[:, n:].min(0)
        grad_q[:, n:].scatter_(0, argmin.unsqueeze(0), -1.0 / n)
        critic_grads, grad_in = ensemble_backward(
            critic_saved, critic_copies, grad_q.unsqueeze(-1), slice(0, n), input_rows=slice(n, None)
        )
        log_prob = log_probs[n:]
        grad_out = squashed_sample_backward(
            tuple(t[n:] for t in sample_saved), grad_in[:, obs_dim:].float(), (alpha / n).expand(n)
        )
        actor_grads, _ = mlp_backward(actor_saved, actor_copies, grad_out, rows=slice(n, None))
        metrics["losses/actor"] = (alpha * log_prob - min_q_pi).mean()
        metrics["charts/entropy"] = -log_prob.mean()
        alpha_grad = None
        if c.autotune:
            alpha_grad = -(log_prob + agent.target_entropy).mean()
            metrics["losses/alpha"] = agent.log_alpha * alpha_grad
        return [*actor_grads, *critic_grads, alpha_grad], metrics
