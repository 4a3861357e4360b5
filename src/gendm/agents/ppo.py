"""Proximal Policy Optimisation (Schulman et al., 2017) with GAE, for discrete and continuous actions.

Clipped surrogate objective, clipped value loss, advantage normalisation per minibatch, global
gradient-norm clipping and linear learning-rate annealing. Defaults follow CleanRL's ``ppo.py``
(classic control); for MuJoCo, CleanRL's ``ppo_continuous_action.py`` uses num_envs=1,
num_steps=2048, num_minibatches=32, update_epochs=10, learning_rate=3e-4, ent_coef=0 and
normalize_obs/normalize_reward=true: pass those with ``--set``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Normal

from gendm.agents.base import Agent, BaseConfig, agent_method
from gendm.core.config import check, field
from gendm.core.methods import register_method
from gendm.data.rollout import RolloutBuffer
from gendm.nn import mlp


@dataclass
class PPOConfig(BaseConfig):
    num_envs: int = 4
    """Parallel training environments (CleanRL: 4)."""
    num_steps: int = field(128, ge=1)
    """Steps per env per rollout (CleanRL: 128)."""
    learning_rate: float = field(2.5e-4, gt=0)
    """Adam learning rate (CleanRL: 2.5e-4)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over the run (CleanRL: true)."""
    gae_lambda: float = field(0.95, ge=0, le=1)
    """GAE lambda (0.95)."""
    num_minibatches: int = field(4, ge=1)
    """Minibatches per epoch (CleanRL: 4)."""
    update_epochs: int = field(4, ge=1)
    """Epochs over each rollout (CleanRL: 4)."""
    norm_adv: bool = True
    """Normalise advantages per minibatch (true)."""
    clip_coef: float = 0.2
    """Surrogate clipping coefficient (0.2)."""
    clip_vloss: bool = True
    """Clip the value loss like the policy (CleanRL: true)."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient (CleanRL classic: 0.01; MuJoCo: 0.0)."""
    vf_coef: float = 0.5
    """Value loss coefficient (0.5)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip (0.5)."""
    target_kl: float | None = None
    """Stop the epoch loop early when the approximate KL exceeds this (None: never; costs a sync)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the separate actor and critic (64, 64)."""
    activation: str = field("tanh", choices=("tanh", "relu"))
    """Hidden activation (tanh)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.num_envs * self.num_steps >= self.num_minibatches,
            "num_minibatches",
            "must not exceed num_envs * num_steps.",
        )

    @property
    def rollout_size(self) -> int:
        return self.num_envs * self.num_steps


def _orthogonal_(net: nn.Sequential, last_gain: float) -> nn.Sequential:
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        nn.init.orthogonal_(layer.weight, last_gain if i == len(linears) - 1 else math.sqrt(2))
        nn.init.zeros_(layer.bias)
    return net


class PPO(Agent):
    def __init__(
        self,
        config: PPOConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        c = config
        obs_dim = int(np.prod(observation_space.shape))
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        act_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.critic = _orthogonal_(mlp(obs_dim, 1, c.hidden, c.activation), 1.0).to(device)
        self.actor = _orthogonal_(mlp(obs_dim, act_dim, c.hidden, c.activation), 0.01).to(device)
        self.log_std = nn.Parameter(torch.zeros(act_dim, device=device))
        self.policy = nn.ModuleDict({"actor": self.actor, "critic": self.critic})
        self.policy.register_parameter("log_std", self.log_std)
        params = list(self.actor.parameters()) + list(self.critic.parameters())
        if not self.discrete:
            params.append(self.log_std)
        self.opt = self.adam(params, lr=c.learning_rate, eps=1e-5)
        self._params = params
        self.parts = {"policy": self.policy, "opt": self.opt}
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        self._minibatch_loss = self.maybe_compile(self._minibatch_loss)

    def distribution(self, obs: torch.Tensor) -> Categorical | Normal:
        out = self.actor(obs)
        if self.discrete:
            return Categorical(logits=out)
        return Normal(out, self.log_std.exp().expand_as(out))

    def _log_prob(self, dist: Categorical | Normal, actions: torch.Tensor) -> torch.Tensor:
        return dist.log_prob(actions) if self.discrete else dist.log_prob(actions).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        out = self.actor(obs)
        if deterministic:
            return out.argmax(-1) if self.discrete else out
        return self.distribution(obs).sample()

    @torch.no_grad()
    def act_with_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions for a rollout: ``(action, log_prob, value)``."""
        dist = self.distribution(obs)
        action = dist.sample()
        return action, self._log_prob(dist, action), self.critic(obs).squeeze(-1)

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def _minibatch_loss(self, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        dist = self.distribution(mb["obs"])
        log_ratio = self._log_prob(dist, mb["actions"]) - mb["log_probs"]
        ratio = log_ratio.exp()
        adv = mb["advantages"]
        if c.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - c.clip_coef, 1 + c.clip_coef)).mean()
        value = self.critic(mb["obs"]).squeeze(-1)
        if c.clip_vloss:
            clipped = mb["values"] + (value - mb["values"]).clamp(-c.clip_coef, c.clip_coef)
            v_loss = 0.5 * torch.max((value - mb["returns"]).pow(2), (clipped - mb["returns"]).pow(2)).mean()
        else:
            v_loss = 0.5 * (value - mb["returns"]).pow(2).mean()
        entropy = dist.entropy()
        entropy = (entropy if self.discrete else entropy.sum(-1)).mean()
        loss = pg_loss - c.ent_coef * entropy + c.vf_coef * v_loss
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean()
            clipfrac = ((ratio - 1).abs() > c.clip_coef).float().mean()
        metrics = {
            "losses/policy": pg_loss.detach(),
            "losses/value": v_loss.detach(),
            "losses/entropy": entropy.detach(),
            "losses/approx_kl": approx_kl,
            "losses/clipfrac": clipfrac,
        }
        return loss, metrics

    def update(self, rollout: RolloutBuffer) -> dict[str, torch.Tensor]:
        """Several epochs of minibatch updates over one rollout whose GAE is already computed."""
        c = self.config
        if c.anneal_lr and self.total_steps:
            # CleanRL's 1 - (iteration - 1) / iterations: the env steps before this rollout, so the
            # first update runs at the full rate and the last one at rate / iterations, not at 0
            done_before = max(self.env_steps - c.rollout_size, 0)
            frac = max(0.0, 1.0 - done_before / self.total_steps)
            for group in self.opt.param_groups:
                group["lr"] = frac * c.learning_rate
        batch_size = math.ceil(c.rollout_size / c.num_minibatches)
        metrics: dict[str, torch.Tensor] = {}
        for _ in range(c.update_epochs):
            for mb in rollout.minibatches(batch_size, self.generator):
                with self.autocast():
                    loss, metrics = self._minibatch_loss(mb)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self._params, c.max_grad_norm, foreach=True)
                self.opt.step()
                self.num_updates += 1
            if c.target_kl is not None and float(metrics["losses/approx_kl"]) > c.target_kl:
                break
        returns, values = rollout.returns.flatten(), rollout.values.flatten()
        metrics["losses/explained_variance"] = 1 - (returns - values).var() / (returns.var() + 1e-8)
        metrics["charts/learning_rate"] = torch.tensor(self.opt.param_groups[0]["lr"])
        return metrics

    def state_dict(self) -> dict:
        return super().state_dict() | {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"].cpu())


register_method(
    agent_method(
        "ppo",
        "on_policy",
        PPOConfig,
        PPO,
        ("discrete", "box"),
        "Proximal Policy Optimisation + GAE",
    )
)
