"""IQL's critic as a reusable part: twin Q with a Polyak target, and V fitted by expectile regression.

Implicit Q-Learning (Kostrikov et al., 2021) learns its critic from dataset actions only:

    V:  L_V = E[ |tau - 1(u < 0)| u^2 ],   u = min_i Q'_i(s, a) - V(s)                  (eq. 5)
    Q:  L_Q = sum_i E[ (r + gamma (1 - d) V(s') - Q_i(s, a))^2 ]                         (eq. 6)

with Q' the Polyak-averaged target twins. No policy appears in either loss, which is what lets IDQL
(Hansen-Estruch et al., 2023) pair this critic with any behaviour model and V-GPS (Nakamoto et al.,
2024) re-rank any policy's actions with it. ``IQLCritic.losses`` returns both losses for one backward
pass (they touch disjoint parameters: V's target is the detached target critic, Q's target the
detached V); ``update_target`` is one ``torch._foreach_lerp_``.

The critic works on what the agent feeds it: observations already normalised, actions in [-1, 1].
``IQLCriticConfig`` holds its config fields, shared by IQL, IDQL and V-GPS:
``class IQLConfig(IQLCriticConfig, OfflineConfig)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gendm.core.config import Config, field
from gendm.nn import EnsembleMLP, mlp


@dataclass
class IQLCriticConfig(Config):
    """The IQL critic's fields (IQL, IDQL and V-GPS: the IQL paper's, d3rlpy's and IDQL's reference
    defaults agree). List it before the family's config: ``class IQLConfig(IQLCriticConfig,
    OfflineConfig)``."""

    critic_learning_rate: float = field(3e-4, gt=0)
    """Adam learning rate of the Q twins and V (IQL paper, d3rlpy IQLConfig, IDQL's reference
    critic_lr and value_lr: 3e-4)."""
    num_critics: int = field(2, ge=1)
    """Q functions in the ensemble; V's target, advantages and action scores use their minimum (2)."""
    tau: float = field(0.005, gt=0, le=1)
    """Polyak coefficient of the target critics (IQL paper, d3rlpy, IDQL's reference: 0.005)."""
    expectile: float = field(0.7, gt=0, lt=1)
    """Expectile of V's regression onto Q; 0.5 is SARSA, toward 1 a max over dataset actions (IQL
    locomotion and d3rlpy: 0.7; IDQL's reference: 0.7 for locomotion, 0.9 for antmaze)."""
    return_scale: float | None = field(None, gt=0)
    """If set, rewards are multiplied by return_scale / (max - min episode return of the dataset):
    1000 in IQL's locomotion runs, d3rlpy's reproduction script (ReturnBasedRewardScaler) and IDQL's
    reference; None (d3rlpy IQLConfig's default) leaves rewards as they are."""


def expectile_loss(u: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric squared loss ``E[|tau - 1(u < 0)| u^2]`` (IQL eq. 5); tau = 0.5 is the mean."""
    return ((expectile - (u < 0).float()).abs() * u.pow(2)).mean()


def expectile_weights(u: torch.Tensor, expectile: float) -> torch.Tensor:
    """IDQL's implicit-policy weights for the expectile critic, ``|tau - 1(u < 0)|`` with u = Q - V
    (IDQL eq. 10 with the score's ratio |u| dropped, as the reference code's ``sample_implicit_policy``)."""
    return (expectile - (u < 0).float()).abs()


def return_scale_factor(dataset: Any, return_scale: float | None) -> float:
    """``return_scale / (max - min episode return)`` of a dataset (IQL's locomotion reward scaling,
    d3rlpy's ReturnBasedRewardScaler), or 1.0 when ``return_scale`` is None or every return is equal."""
    if return_scale is None:
        return 1.0
    returns = np.add.reduceat(dataset.rewards.astype(np.float64), dataset.episode_starts)
    spread = float(returns.max() - returns.min())
    return return_scale / spread if spread > 0 else 1.0


class IQLCritic(nn.Module):
    """Twin Q (one ``EnsembleMLP``), its Polyak target, and V — IQL's critic without its actor.

    Sub-modules are named as in ``gendm.agents.iql.IQL`` (``critic``, ``critic_target``, ``value``).
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256), num_critics: int = 2
    ) -> None:
        super().__init__()
        self.critic = EnsembleMLP(num_critics, obs_dim + act_dim, 1, hidden)
        self.critic_target = EnsembleMLP(num_critics, obs_dim + act_dim, 1, hidden)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.value = mlp(obs_dim, 1, hidden)
        self._pairs = (list(self.critic_target.parameters()), list(self.critic.parameters()))

    def trainable(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates (Q twins and V; the target follows by Polyak)."""
        return [*self.critic.parameters(), *self.value.parameters()]

    def q_target(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``min_i Q'_i(s, a)`` of the target twins, ``(batch,)``, no gradient to the critic."""
        return self.critic_target(torch.cat([obs, actions], -1)).squeeze(-1).min(0).values

    def v(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value(obs).squeeze(-1)

    def losses(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminations: torch.Tensor,
        gamma: float,
        expectile: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """``(L_Q + L_V, metrics, u)`` on a batch; ``u = min Q'(s, a) - V(s)`` (V with gradient) is the
        advantage IQL's actor weights use."""
        with torch.no_grad():
            q_t = self.q_target(obs, actions)
            target = rewards + (1 - terminations) * gamma * self.v(next_obs)
        q = self.critic(torch.cat([obs, actions], -1)).squeeze(-1)
        q_loss = (q - target).pow(2).mean(-1).sum()
        u = q_t - self.v(obs)
        v_loss = expectile_loss(u, expectile)
        metrics = {
            "losses/q": q_loss.detach(),
            "losses/v": v_loss.detach(),
            "losses/q_mean": q.detach().mean(),
        }
        return q_loss + v_loss, metrics, u

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        torch._foreach_lerp_(self._pairs[0], self._pairs[1], tau)


class ReturnScaled:
    """Mixin for offline agents with a ``config.return_scale``: ``prepare`` sets ``self.reward_scale``
    from the dataset (``return_scale_factor``) and checkpoints carry it. List it before the agent base:
    ``class IQL(ReturnScaled, OfflineAgent)``."""

    reward_scale: float = 1.0

    def prepare(self, dataset: Any) -> None:
        super().prepare(dataset)  # type: ignore[misc]
        self.reward_scale = return_scale_factor(dataset, self.config.return_scale)  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"reward_scale": self.reward_scale}  # type: ignore[misc]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)  # type: ignore[misc]
        self.reward_scale = float(state["reward_scale"])


__all__ = [
    "IQLCritic",
    "IQLCriticConfig",
    "ReturnScaled",
    "expectile_loss",
    "expectile_weights",
    "return_scale_factor",
]
