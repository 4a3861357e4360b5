"""Behaviour cloning over discretised actions plus a residual offset, after Behavior Transformers
(Shafiullah, Cui, Altanzaya & Pinto, 2022, "Behavior Transformers: Cloning k modes with one stone").

``prepare(dataset)`` clusters the dataset's actions, rescaled to [-1, 1] (the Box bounds, as ``bc``),
into ``num_bins`` k-means centres (k-means++ initialisation and Lloyd iterations in float64 from a
fixed seed, so the same dataset always gives the same centres; they are a buffer of the policy and
travel with checkpoints). The policy, an MLP on the current observation (BeT's transformer over an
observation history is not used here), outputs per bin a logit and an offset from the bin's centre.
Each dataset action's bin is its nearest centre; the loss is BeT's

    focal(logits, bin; gamma) + offset_loss_weight * mean((offset[bin] - (a - centre[bin]))^2),

a focal loss (Lin et al., 2017; gamma = 0 is cross-entropy) on the bin and a squared error on the
chosen bin's offset only. Acting: ``deterministic=True`` takes the most probable bin,
``deterministic=False`` samples one from ``softmax(logits / temperature)`` (BeT always samples), and
returns its centre plus its offset.

miniBET's defaults (notmahi/miniBET ``BehaviorTransformer``): 32 bins, 50 k-means iterations from a
random initialisation, focal gamma 2, offset weight 1000 on unscaled actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from gendm.agents.base import OfflineConfig, agent_method
from gendm.agents.bc import BC
from gendm.core.config import check, field
from gendm.core.methods import register_method
from gendm.data.replay import Batch
from gendm.nn import mlp

if TYPE_CHECKING:
    from gendm.data.dataset import OfflineDataset

KMEANS_MAX_POINTS = 100_000
"""Larger datasets are clustered on a seeded random subset of this many actions."""


def _sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances ``(N, K)`` between rows of ``x (N, D)`` and ``c (K, D)``."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)).clamp_min(0)


def kmeans(x: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> torch.Tensor:
    """``k`` centres ``(k, D)`` of the rows of ``x (N, D)``: k-means++ seeding then up to ``iters``
    Lloyd steps (stopping early when the centres stop moving), in float64 on the CPU with a generator
    seeded by ``seed``. A centre that loses all its points stays where it is."""
    gen = torch.Generator().manual_seed(seed)
    x = x.detach().to("cpu", torch.float64)
    if len(x) > KMEANS_MAX_POINTS:
        x = x[torch.randperm(len(x), generator=gen)[:KMEANS_MAX_POINTS]]
    centres = x[torch.randint(len(x), (1,), generator=gen)]
    d2 = _sq_dist(x, centres)[:, 0]
    for _ in range(1, k):
        total = d2.sum()
        if total > 0:  # k-means++: the next centre with probability proportional to D(x)^2
            pick = torch.multinomial(d2 / total, 1, generator=gen)
        else:  # fewer distinct actions than bins: duplicate a centre
            pick = torch.randint(len(x), (1,), generator=gen)
        centres = torch.cat([centres, x[pick]])
        d2 = torch.minimum(d2, _sq_dist(x, x[pick])[:, 0])
    for _ in range(iters):
        assign = _sq_dist(x, centres).argmin(1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        if torch.equal(moved, centres):
            break
        centres = moved
    return centres


@dataclass
class BeTBCConfig(OfflineConfig):
    learning_rate: float = field(1e-3, gt=0)
    """Adam learning rate (as bc: 1e-3)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the policy (as bc: 256, 256)."""
    num_bins: int = field(16, ge=1)
    """k, k-means action bins fitted on the dataset (miniBET: 32; 16 suffice for low-dim tasks)."""
    kmeans_iters: int = field(50, ge=1)
    """Most Lloyd iterations of the k-means fit (miniBET: 50)."""
    kmeans_seed: int = 0
    """Seed of the k-means++ initialisation (fixed, so a dataset always gives the same bins)."""
    focal_gamma: float = field(2.0, ge=0)
    """Focal-loss gamma of the bin classifier (BeT: 2; 0 = cross-entropy)."""
    offset_loss_weight: float = field(100.0, ge=0)
    """Weight of the offset's squared error against the bin loss (miniBET: 1000 on unscaled actions)."""
    temperature: float = field(1.0, gt=0)
    """Softmax temperature of the bin distribution when acting stochastically."""


class BinnedPolicy(nn.Module):
    """``obs -> (logits (B, k), offsets (B, k, A))``; the k-means ``centres (k, A)`` are a buffer."""

    def __init__(self, obs_dim: int, act_dim: int, bins: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.bins, self.act_dim = bins, act_dim
        self.net = mlp(obs_dim, bins * (1 + act_dim), hidden)
        self.register_buffer("centres", torch.zeros(bins, act_dim))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(obs)
        return out[:, : self.bins], out[:, self.bins :].reshape(-1, self.bins, self.act_dim)

    def nearest_bin(self, actions: torch.Tensor) -> torch.Tensor:
        return ((actions[:, None, :] - self.centres) ** 2).sum(-1).argmin(-1)


class BeTBC(BC):
    """``bc``'s action scaling, optimiser and update with binned actions: k-means bins fitted in
    ``prepare``, acting on a bin plus its offset, the focal + offset loss."""

    config: BeTBCConfig

    def build_policy(self, obs_dim: int, act_dim: int) -> nn.Module:
        return BinnedPolicy(obs_dim, act_dim, self.config.num_bins, self.config.hidden)

    def prepare(self, dataset: OfflineDataset) -> None:
        super().prepare(dataset)
        c = self.config
        check(
            len(dataset) >= c.num_bins,
            "num_bins",
            f"{c.num_bins} bins need at least as many actions, the dataset has {len(dataset)}: lower it.",
        )
        actions = torch.as_tensor(dataset.actions, dtype=torch.float64)
        scaled = self.action_scaler.scale(actions)  # in float64, as the actions
        self.policy.centres.copy_(kmeans(scaled, c.num_bins, c.kmeans_iters, c.kmeans_seed))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        logits, offsets = self.policy(self.obs_norm(obs))
        if deterministic:
            k = logits.argmax(-1)
        else:
            k = torch.multinomial(torch.softmax(logits / self.config.temperature, dim=-1), 1).squeeze(-1)
        rows = torch.arange(len(k), device=k.device)
        action = self.policy.centres[k] + offsets[rows, k]
        return self.action_scaler.unscale(action, clip=True)

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        with self.autocast():
            actions = self.action_scaler.scale(batch.actions)
            logits, offsets = self.policy(self.obs_norm(batch.obs))
            bins = self.policy.nearest_bin(actions)
            log_p = F.log_softmax(logits, dim=-1).gather(1, bins[:, None])[:, 0]
            bin_loss = (-((1 - log_p.exp()) ** c.focal_gamma) * log_p).mean()
            rows = torch.arange(len(bins), device=bins.device)
            target = actions - self.policy.centres[bins]
            offset_loss = (offsets[rows, bins] - target).pow(2).mean()
            loss = bin_loss + c.offset_loss_weight * offset_loss
        metrics = {
            "losses/bin": bin_loss.detach(),
            "losses/offset": offset_loss.detach(),
            "bet/bin_accuracy": (logits.argmax(-1) == bins).float().mean().detach(),
        }
        return loss, metrics


register_method(
    agent_method(
        "bet_bc",
        "offline",
        BeTBCConfig,
        BeTBC,
        ("box",),
        "Behaviour cloning over k-means action bins plus residual offsets (BeT with an MLP)",
    )
)
