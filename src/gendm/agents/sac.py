"""Soft Actor-Critic (Haarnoja et al., 2018; automatic temperature, Haarnoja et al., 2018b).

Clipped double-Q with a twin critic held as one stacked-parameter ensemble, a tanh-squashed Gaussian
actor, and automatic entropy tuning toward ``target_entropy = -dim(A)``. The losses follow
Stable-Baselines3's SAC; defaults follow SB3 / CleanRL as each field says. Speed habits: no
autograd graph (``_gradients`` derives every gradient by hand) and one fused Adam call per update;
one actor pass over ``next_obs`` and ``obs`` stacked, and one critic pass over ``(obs, a)`` and
``(obs, pi)`` stacked, with row-restricted weight gradients (``gendm.nn.fused``); target update with
one ``torch._foreach_lerp_``; no host sync in ``update``; acting skips the log-probability; optional
bf16 hidden layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from gendm.agents.base import Agent, AlgoSpec, OffPolicyConfig, box_bounds, register
from gendm.core.config import check
from gendm.data.replay import Batch
from gendm.nn import EnsembleMLP, mlp
from gendm.nn.fused import (
    cast_params,
    ensemble_backward,
    ensemble_forward,
    layer_params,
    mlp_backward,
    mlp_forward,
)


@dataclass
class SACConfig(OffPolicyConfig):
    learning_rate: float = 3e-4
    """Adam learning rate for the actor and the temperature (SB3 and CleanRL: 3e-4)."""
    critic_learning_rate: float | None = None
    """Adam learning rate for the critics; None uses learning_rate (SB3). CleanRL uses 1e-3."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics (SB3 / CleanRL: 256, 256)."""
    tau: float = 0.005
    """Polyak coefficient of the target critics (SB3 / CleanRL: 0.005)."""
    num_critics: int = 2
    """Critics in the ensemble; targets use their minimum (clipped double Q: 2)."""
    init_temperature: float = 1.0
    """Initial entropy temperature alpha (SB3 'auto' starts at 1.0)."""
    autotune: bool = True
    """Tune alpha toward target_entropy (SB3 ent_coef='auto')."""
    target_entropy: float | None = None
    """Target policy entropy; None means -dim(action space)."""
    policy_frequency: int = 1
    """Gradient steps between actor updates (SB3: 1; CleanRL: 2, with that many actor steps)."""
    target_network_frequency: int = 1
    """Gradient steps between target updates (SB3 / CleanRL: 1)."""
    log_std_min: float = -20.0
    """Lower clamp of the actor's log std (SB3: -20)."""
    log_std_max: float = 2.0
    """Upper clamp of the actor's log std (SB3: 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.learning_rate > 0, "learning_rate", "must be > 0.")
        check(0 < self.tau <= 1, "tau", f"must be in (0, 1], got {self.tau}.")
        check(self.num_critics >= 1, "num_critics", "must be >= 1.")
        check(self.init_temperature > 0, "init_temperature", "must be > 0.")
        check(self.policy_frequency >= 1, "policy_frequency", "must be >= 1.")
        check(self.log_std_min < self.log_std_max, "log_std_min", "must be < log_std_max.")


class SquashedGaussianActor(nn.Module):
    """obs -> tanh(N(mean, std)) in [-1, 1], with the log-probability of the squashed sample."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], log_std_min: float, log_std_max: float
    ):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if deterministic:
            return torch.tanh(self.net(obs).chunk(2, dim=-1)[0]), None
        return self.sample(self.net(obs))

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """The action of ``forward`` (the same draw from the global generator) without its
        log-probability, which acting does not need: half the kernels of a step's action."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        if deterministic:
            return torch.tanh(mean)
        noise = torch.randn_like(mean)
        return torch.tanh(mean + log_std.clamp(self.log_std_min, self.log_std_max).exp() * noise)

    def sample(self, net_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A squashed sample and its log-probability from the network's output ``(mean, log_std)``."""
        noise = torch.randn_like(net_out[..., : net_out.shape[-1] // 2])
        return _SquashedSample.apply(net_out, noise, self.log_std_min, self.log_std_max)


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


class _SquashedSample(torch.autograd.Function):
    """``squashed_sample`` / ``squashed_sample_backward`` as one autograd node."""

    @staticmethod
    def forward(ctx, net_out, noise, log_std_min, log_std_max):
        action, log_prob, saved = squashed_sample(net_out, noise, log_std_min, log_std_max)
        ctx.save_for_backward(*saved)  # saves the output ``action`` without a reference cycle
        return action, log_prob

    @staticmethod
    def backward(ctx, grad_action, grad_log_prob):
        return squashed_sample_backward(ctx.saved_tensors, grad_action, grad_log_prob), None, None, None


class SAC(Agent):
    def __init__(
        self,
        config: SACConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.action_scale, self.action_bias = box_bounds(action_space, self.device)
        c = config
        self.actor = SquashedGaussianActor(obs_dim, act_dim, c.hidden, c.log_std_min, c.log_std_max).to(
            device
        )
        self.critic = EnsembleMLP(c.num_critics, obs_dim + act_dim, 1, c.hidden).to(device)
        self.critic_target = EnsembleMLP(c.num_critics, obs_dim + act_dim, 1, c.hidden).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(c.init_temperature), device=device))
        self.target_entropy = float(-act_dim if c.target_entropy is None else c.target_entropy)
        groups = [
            {"params": self.actor.parameters()},
            {"params": self.critic.parameters(), "lr": c.critic_learning_rate or c.learning_rate},
        ]
        if c.autotune:  # a fixed temperature stays out: a parameter without gradients forces Adam's slow path
            groups.append({"params": [self.log_alpha]})
        self.opt = self.adam(groups, lr=c.learning_rate)  # one fused step for all of them
        self.parts = {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "opt": self.opt,
            "temperature": _ParamHolder(self.log_alpha),
        }
        self._actor_params = layer_params(self.actor.net)
        self._critic_params = layer_params(self.critic.layers)
        self._target_params = layer_params(self.critic_target.layers)
        self._trained = [*self._actor_params, *self._critic_params, self.log_alpha]
        self._gradients = self.maybe_compile(self._gradients)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor.act(obs, deterministic) * self.action_scale + self.action_bias

    @torch.no_grad()
    def _gradients(
        self, batch: Batch, alpha: torch.Tensor, update_actor: bool
    ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        """Gradients of the summed critic, actor and temperature losses w.r.t. ``self._trained``
        (None where a loss is skipped), derived by hand, with no autograd graph:

        - critic: ``0.5 sum_m mean_i (Q_m(s, a) - y)^2``, ``y = r + gamma (1 - term) (min_m Q'_m(s', a')
          - alpha log pi(a'|s'))``, ``a' ~ pi(s')``: d/dQ_m = (Q_m - y) / n;
        - actor: ``mean_i(alpha log pi(a~|s) - min_m Q_m(s, a~))``, ``a~ ~ pi(s)`` reparameterised, the
          critic held fixed: d/dQ_m = -1/n for the minimising member, d/d log pi = alpha / n;
        - temperature: ``-mean_i(log alpha (log pi(a~|s) + target_entropy))``.

        The losses touch disjoint parameters, so these are exactly the gradients of separate
        updates (tests check them against autograd on plain modules); the only difference from SB3's
        sequence is that the actor sees the critic from before this step's critic update. One actor
        pass covers ``[next_obs; obs]`` and one critic pass ``[(obs, a); (obs, a~)]``, the critic's
        weight gradients taken from the first rows only.
        """
        c = self.config
        n, obs_dim = batch.obs.shape
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        actions = (batch.actions - self.action_bias) / self.action_scale
        actor_copies = cast_params(self._actor_params, dtype)
        actor_obs = torch.cat([batch.next_obs, batch.obs]) if update_actor else batch.next_obs
        out, actor_saved = mlp_forward(actor_obs, actor_copies, self._actor_params)
        noise = torch.randn_like(out[:, : out.shape[1] // 2])
        sampled, log_probs, sample_saved = squashed_sample(out, noise, c.log_std_min, c.log_std_max)

        next_in = torch.cat([batch.next_obs, sampled[:n]], -1)
        target_copies = cast_params(self._target_params, dtype)
        next_q = ensemble_forward(next_in, target_copies, self._target_params)[0]
        next_q = next_q.squeeze(-1).min(0).values
        target = batch.rewards + (1 - batch.terminations) * c.gamma * (next_q - alpha * log_probs[:n])

        critic_in = torch.cat([batch.obs, actions], -1)
        if update_actor:
            critic_in = torch.cat([critic_in, torch.cat([batch.obs, sampled[n:]], -1)])
        critic_copies = cast_params(self._critic_params, dtype)
        q_all, critic_saved = ensemble_forward(critic_in, critic_copies, self._critic_params)
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
            return [None] * len(self._actor_params) + critic_grads + [None], metrics

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
            alpha_grad = -(log_prob + self.target_entropy).mean()
            metrics["losses/alpha"] = self.log_alpha * alpha_grad
        return [*actor_grads, *critic_grads, alpha_grad], metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        alpha = self.log_alpha.detach().exp()
        grads, metrics = self._gradients(batch, alpha, self.num_updates % self.config.policy_frequency == 0)
        for param, grad in zip(self._trained, grads, strict=True):
            param.grad = grad
        self.opt.step()
        if self.num_updates % self.config.target_network_frequency == 0:
            torch._foreach_lerp_(self._target_params, self._critic_params, self.config.tau)
        self.num_updates += 1
        metrics["charts/alpha"] = alpha
        return metrics


class _ParamHolder(nn.Module):
    """Lets a bare parameter (the log temperature) travel in ``parts`` like a module."""

    def __init__(self, param: nn.Parameter) -> None:
        super().__init__()
        self.param = param


register(
    AlgoSpec(
        "sac", SACConfig, SAC, "off_policy", ("box",), "Soft Actor-Critic, twin critics, auto temperature"
    )
)
