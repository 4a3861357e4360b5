"""TD3+BC (Fujimoto & Gu, 2021, "A Minimalist Approach to Offline Reinforcement Learning").

TD3 with two changes: the actor maximises a Q term normalised by its own scale plus a behaviour
cloning term, and observations are standardised with the dataset's statistics:

    pi = argmax_pi E_(s,a)~D [ lambda Q_1(s, pi(s)) - (pi(s) - a)^2 ],
    lambda = alpha / mean |Q_1(s, pi(s))|   (detached; alpha = 2.5)                           (eq. 3)

Critics are TD3's: twin Q with clipped double-Q targets and target policy smoothing; the actor and
the targets are updated every ``policy_delay`` gradient steps. Defaults are d3rlpy 2.8's
``TD3PlusBCConfig`` (which are the paper's) with the observation standardisation that the paper and
d3rlpy's reproduction script use (``StandardObservationScaler``; ``TD3PlusBCConfig`` has no scaler
by default). Critic and actor losses go through one backward pass and one fused Adam step (the
actor sees the critic from before this step's critic update; d3rlpy updates the critic first).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch
from torch import nn

from gendm.agents.base import OfflineAgent, OfflineConfig, agent_method
from gendm.core.config import field
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler
from gendm.data.replay import Batch
from gendm.nn import EnsembleMLP, mlp


@dataclass
class TD3BCConfig(OfflineConfig):
    normalize_obs: bool = True
    """Standardise observations with the dataset's mean and std + 1e-3 (paper; d3rlpy's reproduction
    script: StandardObservationScaler, whose eps is also 1e-3)."""
    actor_learning_rate: float = field(3e-4, gt=0)
    """Adam learning rate of the actor (paper and d3rlpy: 3e-4)."""
    critic_learning_rate: float = field(3e-4, gt=0)
    """Adam learning rate of the critics (paper and d3rlpy: 3e-4)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics (paper and d3rlpy: 256, 256)."""
    tau: float = field(0.005, gt=0, le=1)
    """Polyak coefficient of the targets (paper and d3rlpy: 0.005)."""
    num_critics: int = field(2, ge=1)
    """Q functions in the ensemble; targets use their minimum, the actor the first (2)."""
    alpha: float = field(2.5, ge=0)
    """Weight of the Q term relative to behaviour cloning, alpha in lambda = alpha / mean|Q| (2.5)."""
    policy_noise: float = field(0.2, ge=0)
    """Std of the target policy smoothing noise, actions in [-1, 1] (paper and d3rlpy
    target_smoothing_sigma: 0.2)."""
    noise_clip: float = field(0.5, ge=0)
    """Clip of the target policy smoothing noise (paper and d3rlpy target_smoothing_clip: 0.5)."""
    policy_delay: int = field(2, ge=1)
    """Gradient steps between actor and target updates (paper and d3rlpy update_actor_interval: 2)."""


class TD3BC(OfflineAgent):
    def __init__(
        self,
        config: TD3BCConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        c = config
        obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.action_scaler = ActionScaler.from_space(action_space).to(self.device)
        self.actor = nn.Sequential(mlp(obs_dim, act_dim, c.hidden), nn.Tanh()).to(device)
        self.actor_target = nn.Sequential(mlp(obs_dim, act_dim, c.hidden), nn.Tanh()).to(device)
        self.critic = EnsembleMLP(c.num_critics, obs_dim + act_dim, 1, c.hidden).to(device)
        self.critic_target = EnsembleMLP(c.num_critics, obs_dim + act_dim, 1, c.hidden).to(device)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_target.requires_grad_(False)
        self.critic_target.requires_grad_(False)
        groups = [
            {"params": self.actor.parameters()},
            {"params": self.critic.parameters(), "lr": c.critic_learning_rate},
        ]
        self.opt = self.adam(groups, lr=c.actor_learning_rate)  # one fused step for both
        self.parts |= {
            "actor": self.actor,
            "actor_target": self.actor_target,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "opt": self.opt,
        }
        self._targets = [*self.actor_target.parameters(), *self.critic_target.parameters()]
        self._sources = [*self.actor.parameters(), *self.critic.parameters()]
        self._losses = self.maybe_compile(self._losses)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.action_scaler.unscale(self.actor(self.obs_norm(obs)))

    def _losses(self, batch: Batch, update_actor: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Critic loss, plus the actor loss on delayed steps, summed for one backward pass: they touch
        disjoint parameters (the actor's Q goes through detached critic weights)."""
        c = self.config
        with self.autocast():
            obs, next_obs = self.obs_norm(batch.obs), self.obs_norm(batch.next_obs)
            actions = self.action_scaler.scale(batch.actions)
            with torch.no_grad():
                noise = (torch.randn_like(actions) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
                next_actions = (self.actor_target(next_obs) + noise).clamp(-1, 1)
                next_q = self.critic_target(torch.cat([next_obs, next_actions], -1)).squeeze(-1).min(0).values
                target = batch.rewards + (1 - batch.terminations) * c.gamma * next_q
            q = self.critic(torch.cat([obs, actions], -1)).squeeze(-1)
            loss = (q - target).pow(2).mean(-1).sum()
            metrics = {"losses/critic": loss.detach(), "losses/q_mean": q.detach().mean()}
            if update_actor:
                pi = self.actor(obs)
                q_pi = self.critic(torch.cat([obs, pi], -1), detach=True, member=0).squeeze(-1)
                lam = c.alpha / q_pi.abs().mean().detach()
                bc_loss = (pi - actions).pow(2).mean()
                actor_loss = -lam * q_pi.mean() + bc_loss
                loss = loss + actor_loss
                metrics |= {"losses/actor": actor_loss.detach(), "losses/bc": bc_loss.detach()}
        return loss, metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        update_actor = self.num_updates % self.config.policy_delay == 0
        loss, metrics = self._losses(batch, update_actor)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if update_actor:
            torch._foreach_lerp_(self._targets, self._sources, self.config.tau)
        self.num_updates += 1
        return metrics


register_method(
    agent_method(
        "td3bc",
        "offline",
        TD3BCConfig,
        TD3BC,
        ("box",),
        "TD3+BC: TD3 with a behaviour-cloning term",
    )
)
