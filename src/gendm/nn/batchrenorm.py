"""Batch Renormalization (Ioffe, 2017), as CrossQ uses it (Bhatt et al., 2024).

Train mode normalises with the batch's statistics, corrected toward the running ones:
``x_hat = (x - mu_B) / sigma_B * r + d`` with ``r = sigma_B / sigma``, ``d = (mu_B - mu) / sigma``
(``sigma = sqrt(var + eps)``), both treated as constants (no gradient) and clipped to
``[1/r_max, r_max]`` and ``[-d_max, d_max]``; then ``weight * x_hat + bias``. Before ``warmup_steps``
train-mode passes ``r = 1`` and ``d = 0``, which is plain batch normalisation. That step switch is
SBX's (``sbx.common.jax_layers.BatchRenorm``); Ioffe instead relaxes the clips linearly. Eval mode
normalises with the running statistics. Statistics are biased (divide by n) in the batch and in the
running average, as SBX's are, and the running average weighs the old value by ``momentum`` (SBX's
convention: 0.99; torch's ``BatchNorm`` momentum is one minus this). Running statistics and the
step count are buffers, so checkpoints carry them.

Inputs are ``(batch, features)``, or ``(members, batch, features)`` with ``members`` set: each member
of an ensemble (``gendm.nn.EnsembleMLP``-style stacked critics) has its own gain, bias and statistics,
computed over its own batch dimension. The warm-up test, the clips and the running updates are tensor
ops: no host sync in a pass.
"""

from __future__ import annotations

import torch
from torch import nn


class BatchRenorm(nn.Module):
    def __init__(
        self,
        features: int,
        members: int | None = None,
        momentum: float = 0.99,
        eps: float = 1e-3,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 100_000,
    ) -> None:
        super().__init__()
        shape = (features,) if members is None else (members, 1, features)
        self.features, self.members = features, members
        self.momentum, self.eps, self.r_max, self.d_max = momentum, eps, r_max, d_max
        self.warmup_steps = warmup_steps
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        """Train-mode passes so far (the warm-up counts these)."""

    def extra_repr(self) -> str:
        return (
            f"{self.features}, members={self.members}, momentum={self.momentum}, eps={self.eps}, "
            f"r_max={self.r_max}, d_max={self.d_max}, warmup_steps={self.warmup_steps}"
        )

    def forward(self, x: torch.Tensor, train: bool | None = None, detach: bool = False) -> torch.Tensor:
        """``train`` None follows ``self.training``; ``detach`` uses detached gain and bias (a pass
        whose loss must not reach this layer's parameters, as the actor's pass through the critic)."""
        train = self.training if train is None else train
        weight, bias = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        if not train:
            scale = weight * torch.rsqrt(self.running_var + self.eps)
            return torch.addcmul(bias - self.running_mean * scale, x, scale)
        stats_in = x if x.dtype == torch.float32 else x.float()
        # two passes (mean, then mean squared deviation): ~3x faster here than torch.var_mean over dim -2
        mean = stats_in.mean(-2, keepdim=True)
        var = torch.square(stats_in - mean).mean(-2, keepdim=True)
        var, mean = var.view_as(self.running_var), mean.view_as(self.running_mean)
        std = torch.sqrt(var + self.eps)
        with torch.no_grad():
            running_std = torch.sqrt(self.running_var + self.eps)
            warm = self.steps >= self.warmup_steps
            r = torch.where(warm, (std / running_std).clamp(1 / self.r_max, self.r_max), 1.0)
            d = ((mean - self.running_mean) / running_std).clamp(-self.d_max, self.d_max)
            d = torch.where(warm, d, 0.0)
            self.running_mean.lerp_(mean, 1 - self.momentum)
            self.running_var.lerp_(var, 1 - self.momentum)
            self.steps += 1
        # weight * ((x - mean) / std * r + d) + bias, as one multiply-add on x
        scale = weight * r / std
        return torch.addcmul(bias + weight * d - mean * scale, x, scale)
