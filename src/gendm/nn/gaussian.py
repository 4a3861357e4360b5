"""A Gaussian policy over actions in [-1, 1] with a tanh-squashed mean (BC, IQL, AWR-style actors)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gendm.nn.mlp import mlp


class GaussianPolicy(nn.Module):
    """``obs -> N(tanh(mu(obs)), std)``: the mean is squashed into [-1, 1], the distribution is not.

    This is d3rlpy's ``NormalPolicy`` with ``build_gaussian_distribution`` (and the IQL reference
    code's ``NormalTanhPolicy(tanh_squash_distribution=False)``): log-probabilities of dataset
    actions are exact Gaussian densities, finite even at the action bounds, and the deterministic
    action is the squashed mean.

    ``state_dependent_std=True``: a second head gives log std, clamped to ``[log_std_min,
    log_std_max]``. ``False``: one learned log std per action dimension, mapped into the same range
    through a sigmoid (d3rlpy's ``use_std_parameter=True``, which IQL uses; it starts mid-range).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        state_dependent_std: bool = True,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.state_dependent_std = state_dependent_std
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.net = mlp(obs_dim, 2 * act_dim if state_dependent_std else act_dim, hidden)
        if not state_dependent_std:
            self.log_std_param = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean in [-1, 1], log_std)``, each ``(batch, act_dim)``."""
        out = self.net(obs)
        if self.state_dependent_std:
            mu, log_std = out.chunk(2, dim=-1)
            log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        else:
            mu = out
            span = self.log_std_max - self.log_std_min
            log_std = (self.log_std_min + span * torch.sigmoid(self.log_std_param)).expand_as(mu)
        return torch.tanh(mu), log_std

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``log N(actions | mean(obs), std(obs))`` summed over action dimensions: ``(batch,)``."""
        mean, log_std = self(obs)
        z = (actions - mean) * torch.exp(-log_std)  # fp32: the MLP's output layer runs in fp32
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        mean, log_std = self(obs)
        if deterministic:
            return mean
        return mean + log_std.exp() * torch.randn_like(mean)
