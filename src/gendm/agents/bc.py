"""Behaviour cloning with a Gaussian policy (maximum likelihood; Pomerleau, 1991; Bain & Sammut, 1995).

The policy is ``N(tanh(mu(s)), sigma(s))`` over actions rescaled to [-1, 1], fitted by minimising the
negative log-likelihood of the dataset's actions; the deterministic action is the mean. One Gaussian
is one mode: on demonstrations that go around an obstacle on either side, the maximum-likelihood
mean lies between the two paths, which is the failure generative policies exist to fix
(``gendm/TwoPathReach-v0``).

d3rlpy's ``BCConfig`` defaults to a deterministic policy with an MSE loss (lr 1e-3, batch 100); its
``policy_type="stochastic"`` uses the same Gaussian (log std in [-4, 15]) with an MSE loss on a
sampled action. gendm uses the likelihood, the textbook Gaussian BC.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch
from torch import nn

from gendm.agents.base import OfflineAgent, OfflineConfig, agent_method
from gendm.core.config import check, field
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler
from gendm.data.replay import Batch
from gendm.nn import GaussianPolicy


@dataclass
class BCConfig(OfflineConfig):
    learning_rate: float = field(1e-3, gt=0)
    """Adam learning rate (d3rlpy BCConfig: 1e-3)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the policy (d3rlpy's default encoder: 256, 256)."""
    state_dependent_std: bool = True
    """Log std from a second head (True) or one learned value per action dimension (False)."""
    log_std_min: float = -5.0
    """Lower bound of the log std (IQL's Gaussian actor: -5)."""
    log_std_max: float = 2.0
    """Upper bound of the log std (IQL's Gaussian actor: 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.log_std_min < self.log_std_max, "log_std_min", "must be < log_std_max.")


class BC(OfflineAgent):
    def __init__(
        self,
        config: BCConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.action_scaler = ActionScaler.from_space(action_space).to(self.device)
        self.policy = self.build_policy(obs_dim, act_dim).to(self.device)
        self.opt = self.adam(self.policy.parameters(), lr=config.learning_rate)
        self.parts |= {"policy": self.policy, "opt": self.opt}
        self._loss = self.maybe_compile(self._loss)

    def build_policy(self, obs_dim: int, act_dim: int) -> nn.Module:
        """The policy network. The other BC methods (``mdn_bc``, ``bet_bc``) return theirs here and
        keep this class's action scaling, optimiser and update."""
        c = self.config
        return GaussianPolicy(obs_dim, act_dim, c.hidden, c.state_dependent_std, c.log_std_min, c.log_std_max)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        action = self.policy.act(self.obs_norm(obs), deterministic)
        return self.action_scaler.unscale(action, clip=True)

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self.autocast():
            actions = self.action_scaler.scale(batch.actions)
            log_prob = self.policy.log_prob(self.obs_norm(batch.obs), actions)
            loss = -log_prob.mean()
        return loss, {"losses/nll": loss.detach()}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss, metrics = self._loss(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.num_updates += 1
        return metrics


register_method(
    agent_method(
        "bc",
        "offline",
        BCConfig,
        BC,
        ("box",),
        "Behaviour cloning, Gaussian policy (max. likelihood)",
    )
)
