"""Soft Actor-Critic (Haarnoja et al., 2018; automatic temperature, Haarnoja et al., 2018b).

Clipped double-Q with a twin critic held as one stacked-parameter ensemble, a tanh-squashed Gaussian
actor, and automatic entropy tuning toward ``target_entropy = -dim(A)``. The losses follow
Stable-Baselines3's SAC; defaults follow SB3 / CleanRL as each field says. Speed habits: one
backward pass and one fused Adam step per update; one actor pass over ``next_obs`` and ``obs``
stacked, and one critic pass over ``(obs, a)`` and ``(obs, pi)`` stacked, each a single autograd
node with row-restricted weight gradients (``gendm.nn.fused``); both critics in one batched matmul;
target update with one ``torch._foreach_lerp_``; no host sync in ``update``; optional bf16 hidden
layers.
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
from gendm.nn.fused import fused_ensemble, fused_mlp


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

    def sample(self, net_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A squashed sample and its log-probability from the network's output ``(mean, log_std)``."""
        noise = torch.randn_like(net_out[..., : net_out.shape[-1] // 2])
        return _SquashedSample.apply(net_out, noise, self.log_std_min, self.log_std_max)


class _SquashedSample(torch.autograd.Function):
    """``a = tanh(mean + exp(clamp(log_std)) * noise)`` and ``log pi(a)`` as one autograd node.

    log pi(a) = log N(x; mean, std) - log|d tanh(x)/dx|, the latter written stably as
    2(log 2 - x - softplus(-2x)). Backward by hand, with the noise held fixed (reparameterisation):
    the Gaussian term, written in the noise, does not depend on x, so d log pi/dx = 2a from the tanh
    term; d a/dx = 1 - a^2; dx/d mean = 1, dx/d log_std = std * noise, and log pi has -1 in log_std
    directly; clamped log stds get no gradient.
    """

    @staticmethod
    def forward(ctx, net_out, noise, log_std_min, log_std_max):
        mean, raw_log_std = net_out.chunk(2, dim=-1)
        log_std = raw_log_std.clamp(log_std_min, log_std_max)
        scaled_noise = log_std.exp() * noise
        x = mean + scaled_noise
        action = torch.tanh(x)
        per_dim = 2 * (x + F.softplus(-2 * x)) - 0.5 * noise.square() - log_std
        constant = noise.shape[-1] * (0.5 * math.log(2 * math.pi) + 2 * math.log(2))
        log_prob = per_dim.sum(-1) - constant
        ctx.save_for_backward(
            action, scaled_noise, (raw_log_std >= log_std_min) & (raw_log_std <= log_std_max)
        )
        return action, log_prob

    @staticmethod
    def backward(ctx, grad_action, grad_log_prob):
        action, scaled_noise, inside = ctx.saved_tensors
        grad_x = torch.zeros_like(action)
        if grad_action is not None:
            grad_x = grad_action * (1 - action.square())
        if grad_log_prob is not None:
            grad_x = grad_x + 2 * action * grad_log_prob.unsqueeze(-1)
        grad_log_std = grad_x * scaled_noise
        if grad_log_prob is not None:
            grad_log_std = grad_log_std - grad_log_prob.unsqueeze(-1)
        return torch.cat([grad_x, grad_log_std * inside], -1), None, None, None


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
            {"params": [self.log_alpha]},
        ]
        self.opt = self.adam(groups, lr=c.learning_rate)  # one fused step for all three
        self.parts = {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "opt": self.opt,
            "temperature": _ParamHolder(self.log_alpha),
        }
        self._target_pairs = (list(self.critic_target.parameters()), list(self.critic.parameters()))
        self._losses = self.maybe_compile(self._losses)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        action, _ = self.actor(obs, deterministic)
        return action * self.action_scale + self.action_bias

    def _losses(
        self, batch: Batch, alpha: torch.Tensor, update_actor: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Critic, actor and temperature losses, summed for one backward pass and one fused Adam step.

        The losses touch disjoint parameters (targets under no_grad, the actor's Q with weight
        gradients restricted to the critic-loss rows, alpha's loss on detached log-probs), so their
        gradients are exactly those of separate updates; the only difference from SB3's sequence is
        that the actor sees the critic from before this step's critic update.
        """
        c = self.config
        n = batch.obs.shape[0]
        dtype = torch.bfloat16 if c.precision == "bf16" else torch.float32
        actions = (batch.actions - self.action_bias) / self.action_scale
        # One actor pass: rows [:n] sample next actions for the target (no gradient), rows [n:] pi(obs).
        actor_obs = torch.cat([batch.next_obs, batch.obs]) if update_actor else batch.next_obs
        with torch.set_grad_enabled(update_actor and torch.is_grad_enabled()):
            out = fused_mlp(self.actor.net, actor_obs, dtype, grad_rows=slice(n, None))
            sampled, log_probs = self.actor.sample(out)
        with torch.no_grad():
            next_q = fused_ensemble(self.critic_target, torch.cat([batch.next_obs, sampled[:n]], -1), dtype)
            next_q = next_q.squeeze(-1).min(0).values
            target = batch.rewards + (1 - batch.terminations) * c.gamma * (next_q - alpha * log_probs[:n])
        # One critic pass: rows [:n] are (obs, a) for the critic loss and the only rows whose
        # gradients reach the critic's weights; rows [n:] are (obs, pi) for the actor loss.
        critic_in = torch.cat([batch.obs, actions], -1)
        if update_actor:
            pi, log_prob = sampled[n:], log_probs[n:]
            critic_in = torch.cat([critic_in, torch.cat([batch.obs, pi], -1)])
        q_all = fused_ensemble(self.critic, critic_in, dtype, weight_rows=slice(0, n)).squeeze(-1)
        q = q_all[:, :n]
        critic_loss = 0.5 * (q - target).pow(2).mean(-1).sum()
        loss = critic_loss
        metrics = {"losses/critic": critic_loss.detach(), "losses/q_mean": q.detach().mean()}
        if update_actor:
            actor_loss = (alpha * log_prob - q_all[:, n:].min(0).values).mean()
            loss = loss + actor_loss
            metrics |= {"losses/actor": actor_loss.detach(), "charts/entropy": -log_prob.detach().mean()}
            if c.autotune:
                alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
                loss = loss + alpha_loss
                metrics["losses/alpha"] = alpha_loss.detach()
        return loss, metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        alpha = self.log_alpha.detach().exp()
        loss, metrics = self._losses(batch, alpha, self.num_updates % self.config.policy_frequency == 0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.num_updates % self.config.target_network_frequency == 0:
            torch._foreach_lerp_(self._target_pairs[0], self._target_pairs[1], self.config.tau)
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
