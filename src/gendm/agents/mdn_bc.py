"""Behaviour cloning with a mixture-density policy (Bishop, 1994, "Mixture Density Networks", NCRG/94/004).

The policy is a mixture of ``num_components`` diagonal Gaussians over actions rescaled to [-1, 1] (the
Box bounds, as ``bc``):

    pi(a | s) = sum_k w_k(s) N(a | tanh(mu_k(s)), diag(sigma_k(s)^2)),   w(s) = softmax(logits(s)),

one MLP trunk with one linear output holding the K logits, K means and K log stds (clamped to
``[log_std_min, log_std_max]``), fitted by minimising the negative log-likelihood of the dataset's
actions, ``-logsumexp_k(log w_k + log N_k)`` (stable for components far from the action). With K = 1
it is ``bc``; with K >= 2 it can keep both ways round an obstacle (``gendm/TwoPathReach-v0``) as
separate components instead of averaging them.

Acting: ``deterministic=True`` returns the mean of the most probable component (the mode of the
mixture's largest weight, not the mixture's mean, which would average the modes again);
``deterministic=False`` samples a component from ``w(s)`` and then an action from its Gaussian, with
torch's global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gendm.agents.base import OfflineConfig, agent_method
from gendm.agents.bc import BC
from gendm.core.config import check, field
from gendm.core.methods import register_method
from gendm.nn import mlp


@dataclass
class MDNBCConfig(OfflineConfig):
    learning_rate: float = field(1e-3, gt=0)
    """Adam learning rate (as bc: d3rlpy BCConfig's 1e-3)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the trunk (as bc: 256, 256)."""
    num_components: int = field(5, ge=1)
    """K, Gaussian components of the mixture (1 = Gaussian BC)."""
    log_std_min: float = -5.0
    """Lower bound of each component's log std (as bc: -5)."""
    log_std_max: float = 2.0
    """Upper bound of each component's log std (as bc: 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.log_std_min < self.log_std_max, "log_std_min", "must be < log_std_max.")


class MixturePolicy(nn.Module):
    """``obs -> (logits (B, K), means (B, K, A) in [-1, 1], log_stds (B, K, A))``; the output layer runs
    in fp32 under autocast (``gendm.nn.mlp``), so the likelihood is computed in fp32."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        components: int,
        hidden: Sequence[int],
        log_std_min: float,
        log_std_max: float,
    ) -> None:
        super().__init__()
        self.components, self.act_dim = components, act_dim
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.net = mlp(obs_dim, components * (1 + 2 * act_dim), hidden)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(obs)
        k, a = self.components, self.act_dim
        logits = out[:, :k]
        mu, log_std = out[:, k:].reshape(-1, k, 2 * a).chunk(2, dim=-1)
        return logits, torch.tanh(mu), log_std.clamp(self.log_std_min, self.log_std_max)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``log pi(actions | obs)``: ``(batch,)``."""
        logits, mean, log_std = self(obs)
        z = (actions[:, None, :] - mean) * torch.exp(-log_std)
        per_component = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(torch.log_softmax(logits, dim=-1) + per_component, dim=-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        logits, mean, log_std = self(obs)
        if deterministic:
            k = logits.argmax(-1)
        else:
            k = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)
        rows = torch.arange(len(k), device=k.device)
        mean, log_std = mean[rows, k], log_std[rows, k]
        return mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)


class MDNBC(BC):
    """``bc`` with the mixture policy: the same action scaling, loss (the policy's NLL), optimiser and
    update; ``MixturePolicy.act`` / ``log_prob`` supply the mixture's acting and likelihood."""

    config: MDNBCConfig

    def build_policy(self, obs_dim: int, act_dim: int) -> nn.Module:
        c = self.config
        return MixturePolicy(obs_dim, act_dim, c.num_components, c.hidden, c.log_std_min, c.log_std_max)


register_method(
    agent_method(
        "mdn_bc",
        "offline",
        MDNBCConfig,
        MDNBC,
        ("box",),
        "Behaviour cloning, Gaussian-mixture policy (mixture density network)",
    )
)
