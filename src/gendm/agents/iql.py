"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2021, "Offline RL with Implicit Q-Learning").

IQL never queries Q at actions outside the dataset. Three fits per step, on dataset transitions:

    V:  expectile regression  L_V = E[ |tau - 1(u < 0)| u^2 ],  u = min_i Q'_i(s, a) - V(s)   (eq. 5)
    Q:  L_Q = sum_i E[ (r + gamma (1 - d) V(s') - Q_i(s, a))^2 ]                             (eq. 6)
    pi: advantage-weighted regression  L_pi = -E[ min(exp(beta (Q'(s, a) - V(s))), w_max)
                                                  log pi(a | s) ]                              (eq. 7)

with Q' the Polyak-averaged target twins. Defaults are d3rlpy 2.8's ``IQLConfig`` (expectile 0.7,
weight_temp 3.0, max_weight 100, tau 0.005, lr 3e-4, batch 256, two 256-256 critics, Gaussian actor
with tanh mean and a state-independent log std in [-5, 2]) plus the actor's cosine learning-rate
decay of the paper and of d3rlpy's reproduction script (``IQLConfig`` itself has none). The paper's
locomotion runs also scale rewards by 1000 / (max - min episode return): ``return_scale=1000``.

Speed: the three losses touch disjoint parameters (V's target is the detached target critic, Q's
target the detached V, the actor's weights are computed without gradient), so they go through one
backward pass and one fused Adam step. d3rlpy updates the actor after the critic step; here the
actor's advantage uses V from before this step's update.

``q_value(obs, actions)`` and ``value(obs)`` expose the critic for methods that reuse it (IDQL's
action selection, V-GPS).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from gendm.agents.base import LR_SCHEDULES, OfflineAgent, OfflineConfig, agent_method
from gendm.agents.critics import IQLCritic, IQLCriticConfig, ReturnScaled
from gendm.core.config import check, field
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler
from gendm.data.replay import Batch
from gendm.nn import GaussianPolicy


@dataclass
class IQLConfig(IQLCriticConfig, OfflineConfig):
    actor_learning_rate: float = field(3e-4, gt=0)
    """Adam learning rate of the actor (paper and d3rlpy IQLConfig: 3e-4)."""
    actor_lr_schedule: str = field("cosine", choices=LR_SCHEDULES)
    """Actor learning rate over the run: cosine (decay to 0 over the run's gradient steps, as in the
    paper and d3rlpy's reproduction script) or constant (d3rlpy IQLConfig's default)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor, critics and value (paper and d3rlpy: 256, 256)."""
    temperature: float = field(3.0, ge=0)
    """Inverse temperature beta of the advantage weights exp(beta A) (paper locomotion and d3rlpy
    weight_temp: 3.0)."""
    max_weight: float = field(100.0, gt=0)
    """Clip of the advantage weights (paper and d3rlpy max_weight: 100)."""
    log_std_min: float = -5.0
    """Lower bound of the actor's state-independent log std (paper and d3rlpy: -5)."""
    log_std_max: float = 2.0
    """Upper bound of the actor's state-independent log std (paper and d3rlpy: 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.log_std_min < self.log_std_max, "log_std_min", "must be < log_std_max.")


class IQL(ReturnScaled, OfflineAgent):
    def __init__(
        self,
        config: IQLConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        c = config
        obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.action_scaler = ActionScaler.from_space(action_space).to(self.device)
        self.policy = GaussianPolicy(obs_dim, act_dim, c.hidden, False, c.log_std_min, c.log_std_max)
        self.policy.to(device)
        self.iql = IQLCritic(obs_dim, act_dim, c.hidden, c.num_critics).to(device)  # Q twins, target, V
        critics = self.iql.trainable()
        groups = [{"params": self.policy.parameters()}, {"params": critics, "lr": c.critic_learning_rate}]
        self.opt = self.adam(groups, lr=c.actor_learning_rate)  # one fused step for all three losses
        self.parts |= {
            "policy": self.policy,
            "critic": self.iql.critic,  # checkpoint names as before the critic became IQLCritic
            "critic_target": self.iql.critic_target,
            "value": self.iql.value,
            "opt": self.opt,
        }
        self._losses = self.maybe_compile(self._losses)

    # ------------------------------------------------------------------------------ acting, critic
    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        action = self.policy.act(self.obs_norm(obs), deterministic)
        return self.action_scaler.unscale(action, clip=True)

    @torch.no_grad()
    def q_value(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min_i Q'_i(s, a) of the target twins (what IQL's advantage and IDQL's selection use), for
        raw observations and actions in the env's units: ``(batch,)``."""
        return self.iql.q_target(self.obs_norm(obs), self.action_scaler.scale(actions))

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) for raw observations: ``(batch,)``."""
        return self.iql.v(self.obs_norm(obs))

    # -------------------------------------------------------------------------------------- update
    def _losses(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        with self.autocast():
            obs, next_obs = self.obs_norm(batch.obs), self.obs_norm(batch.next_obs)
            actions = self.action_scaler.scale(batch.actions)
            rewards = batch.rewards * self.reward_scale
            critic_loss, metrics, u = self.iql.losses(
                obs, actions, rewards, next_obs, batch.terminations, c.gamma, c.expectile
            )
            weight = torch.exp(c.temperature * u.detach()).clamp(max=c.max_weight)
            actor_loss = -(weight * self.policy.log_prob(obs, actions)).mean()
        metrics |= {"losses/actor": actor_loss.detach(), "charts/adv_weight_mean": weight.mean()}
        return critic_loss + actor_loss, metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        if c.actor_lr_schedule == "cosine":
            self.opt.param_groups[0]["lr"] = self.cosine_lr(c.actor_learning_rate)
        loss, metrics = self._losses(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.iql.update_target(c.tau)
        self.num_updates += 1
        return metrics


register_method(
    agent_method(
        "iql",
        "offline",
        IQLConfig,
        IQL,
        ("box",),
        "Implicit Q-Learning: expectile value, weighted actor",
    )
)
