"""Twin Delayed DDPG (Fujimoto et al., 2018).

Clipped double-Q with twin critics (one stacked-parameter ensemble), target policy smoothing, and
delayed actor and target updates; critic and actor losses share one backward pass and one fused Adam
step (the actor sees the critic from before this step's critic update). Defaults follow CleanRL's
``td3_continuous_action.py`` and SB3 as each field says. Actions live in [-1, 1] inside the agent
and are scaled to the env's bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch
from torch import nn

from gendm.agents.base import Agent, OffPolicyConfig, agent_method
from gendm.core.config import field
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler
from gendm.data.replay import Batch
from gendm.nn import EnsembleMLP, mlp


@dataclass
class TD3Config(OffPolicyConfig):
    learning_rate: float = field(3e-4, gt=0)
    """Adam learning rate of actor and critics (CleanRL / SB3: 3e-4; RL Zoo uses 1e-3 on Pendulum)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths (CleanRL: 256, 256; SB3: 400, 300)."""
    tau: float = field(0.005, gt=0, le=1)
    """Polyak coefficient of the targets (CleanRL / SB3: 0.005)."""
    exploration_noise: float = field(0.1, ge=0)
    """Std of the Gaussian action noise while collecting, in units of half the action range (0.1)."""
    policy_noise: float = 0.2
    """Std of the target policy smoothing noise (0.2)."""
    noise_clip: float = 0.5
    """Clip of the target policy smoothing noise (0.5)."""
    policy_frequency: int = field(2, ge=1)
    """Gradient steps between actor and target updates (2)."""


class TD3(Agent):
    def __init__(
        self,
        config: TD3Config,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.action_scaler = ActionScaler.from_space(action_space).to(self.device)
        c = config
        self.actor = nn.Sequential(mlp(obs_dim, act_dim, c.hidden), nn.Tanh()).to(device)
        self.actor_target = nn.Sequential(mlp(obs_dim, act_dim, c.hidden), nn.Tanh()).to(device)
        self.critic = EnsembleMLP(2, obs_dim + act_dim, 1, c.hidden).to(device)
        self.critic_target = EnsembleMLP(2, obs_dim + act_dim, 1, c.hidden).to(device)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_target.requires_grad_(False)
        self.critic_target.requires_grad_(False)
        params = [*self.actor.parameters(), *self.critic.parameters()]
        self.opt = self.adam(params, lr=c.learning_rate)  # one fused step for both
        self.parts = {
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
        action = self.actor(obs)
        if not deterministic:
            action = (action + self.config.exploration_noise * torch.randn_like(action)).clamp(-1, 1)
        return self.action_scaler.unscale(action)

    def _losses(self, batch: Batch, update_actor: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Critic loss, plus the actor loss on delayed steps, summed for one backward pass: they touch
        disjoint parameters (the actor's Q goes through detached critic weights)."""
        c = self.config
        with self.autocast():
            actions = self.action_scaler.scale(batch.actions)
            with torch.no_grad():
                noise = (torch.randn_like(actions) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
                next_actions = (self.actor_target(batch.next_obs) + noise).clamp(-1, 1)
                next_q = (
                    self.critic_target(torch.cat([batch.next_obs, next_actions], -1))
                    .squeeze(-1)
                    .min(0)
                    .values
                )
                target = batch.rewards + (1 - batch.terminations) * c.gamma * next_q
            q = self.critic(torch.cat([batch.obs, actions], -1)).squeeze(-1)
            loss = (q - target).pow(2).mean(-1).sum()
            metrics = {"losses/critic": loss.detach(), "losses/q_mean": q.detach().mean()}
            if update_actor:
                pi = self.actor(batch.obs)
                actor_loss = -self.critic(torch.cat([batch.obs, pi], -1), detach=True, member=0).mean()
                loss = loss + actor_loss
                metrics["losses/actor"] = actor_loss.detach()
        return loss, metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        update_actor = self.num_updates % self.config.policy_frequency == 0
        loss, metrics = self._losses(batch, update_actor)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if update_actor:
            torch._foreach_lerp_(self._targets, self._sources, self.config.tau)
        self.num_updates += 1
        return metrics


register_method(agent_method("td3", "off_policy", TD3Config, TD3, ("box",), "Twin Delayed DDPG"))
