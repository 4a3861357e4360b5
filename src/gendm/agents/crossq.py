"""CrossQ (Bhatt et al., ICLR 2024): SAC without target networks, with batch-renormalised networks.

The critics (twin, one stacked-parameter ensemble) put Batch Renormalization (``gendm.nn.batchrenorm``)
on their input and after every hidden ReLU; the actor, SAC's tanh-squashed Gaussian, does the same
when ``actor_batch_norm``. The critic update runs the critics once, in train mode, on the joint batch
``[(s, a); (s', a')]`` with ``a' ~ pi(s')``, so both halves share one set of normalisation statistics;
the Q values split back into the current half and the next-state half, and the target is the
stop-gradient of ``r + gamma (1 - term) (min_m Q_m(s', a') - alpha log pi(a'|s'))``. The actor (and
temperature) update every ``policy_delay`` gradient steps, against the critics in eval mode (running
statistics). Next actions are drawn with the actor in eval mode; acting uses eval mode. This is SBX's
CrossQ (``sbx/crossq/crossq.py``), whose defaults each field names, except that, in gendm's SAC style
(``SAC._losses``), the critic, actor and temperature losses share one backward pass, so the actor
sees the critics' weights from before this step's critic update (their running statistics already
include this step's joint batch, as in SBX). Two fused Adams (critics; actor and temperature) keep
the fast path on critic-only steps. ``learning_starts`` keeps gendm's off-policy default (5000, as
gendm's SAC); SBX's CrossQ starts learning after 100 steps: set it alike for a side-by-side run.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import gymnasium as gym
import torch
from torch import nn

from gendm.agents.base import Agent, OffPolicyConfig, agent_method
from gendm.agents.sac import SquashedGaussianActor, _ParamHolder
from gendm.core.config import check, field
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler
from gendm.data.replay import Batch
from gendm.nn.batchrenorm import BatchRenorm
from gendm.nn.ensemble import EnsembleLinear
from gendm.nn.mlp import MLP, fp32_head


@dataclass
class CrossQConfig(OffPolicyConfig):
    learning_rate: float = field(1e-3, gt=0)
    """Adam learning rate of actor, critics and temperature (SBX's CrossQ: 1e-3)."""
    critic_learning_rate: float | None = field(None, gt=0)
    """Adam learning rate of the critics; None uses learning_rate (SBX: qf_learning_rate=None)."""
    adam_beta1: float = field(0.5, ge=0, lt=1)
    """Adam beta1 of actor and critics (the paper and SBX: 0.5; the temperature keeps 0.9, as SBX)."""
    hidden: tuple[int, ...] = field((256, 256), ge=1)
    """Hidden layer widths of the actor (the paper and SBX: 256, 256)."""
    critic_hidden: tuple[int, ...] = field((2048, 2048), ge=1)
    """Hidden layer widths of the critics (the paper: 2048, 2048; SBX's default is 1024, 1024). Wide
    critics are slow on a CPU: SBX's CrossQ at 2048 runs ~8 updates/s on Pendulum here (issue 17), this
    one 1.7-2.4 updates/s at 2048, 5.8-6.1 at 1024, 45-53 at 256 (one thread, batch 256, a loaded
    2-core box; matmul-bound at 2048). SBX's comment: CrossQ already works with 256, 256."""
    num_critics: int = field(2, ge=1)
    """Critics in the ensemble; the target and the actor loss use their minimum (SBX: 2)."""
    actor_batch_norm: bool = True
    """Batch renormalisation in the actor too (SBX: batch_norm_actor=True)."""
    batch_norm_momentum: float = field(0.99, ge=0, lt=1)
    """Weight of the old value in the running statistics' average (SBX: 0.99; torch BatchNorm's
    momentum is one minus this)."""
    batch_norm_eps: float = field(1e-3, gt=0)
    """Added to the variance in the normalisation (SBX's BatchRenorm: 1e-3)."""
    renorm_warmup_steps: int = field(100_000, ge=0)
    """Train-mode passes of a layer with plain batch norm (r = 1, d = 0) before the renormalisation
    corrections apply (SBX: renorm_warmup_steps=100_000, a step switch)."""
    r_max: float = field(3.0, ge=1)
    """Clip of the renormalisation scale r to [1/r_max, r_max] (SBX: 3)."""
    d_max: float = field(5.0, ge=0)
    """Clip of the renormalisation shift d to [-d_max, d_max] (SBX: 5)."""
    policy_delay: int = field(3, ge=1)
    """Gradient steps between actor and temperature updates, on steps k with (k + 1) % policy_delay
    == 0 as SBX counts them (the paper and SBX: 3)."""
    init_temperature: float = field(1.0, gt=0)
    """Initial entropy temperature alpha (SBX ent_coef='auto': 1.0)."""
    autotune: bool = True
    """Tune alpha toward target_entropy (SBX ent_coef='auto')."""
    target_entropy: float | None = None
    """Target policy entropy; None means -dim(action space) (SBX 'auto')."""
    log_std_min: float = -20.0
    """Lower clamp of the actor's log std (SBX: -20)."""
    log_std_max: float = 2.0
    """Upper clamp of the actor's log std (SBX: 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.log_std_min < self.log_std_max, "log_std_min", "must be < log_std_max.")


class BRNCritics(nn.Module):
    """``members`` Q-networks ``(obs, action) -> (members, batch)``: batch renorm on the input, then
    Linear, ReLU, batch renorm per hidden layer, then a linear head (SBX's CrossQ critic)."""

    def __init__(self, members: int, in_dim: int, hidden: tuple[int, ...], **norm: float) -> None:
        super().__init__()
        dims = [in_dim, *hidden]
        self.members = members
        self.norms = nn.ModuleList(BatchRenorm(d, members, **norm) for d in dims)
        self.layers = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in itertools.pairwise(dims))
        self.head = EnsembleLinear(members, dims[-1], 1)

    def forward(self, x: torch.Tensor, train: bool, detach: bool = False) -> torch.Tensor:
        """``x`` ``(batch, in)``; ``train`` normalises with (and updates) the batch's statistics, else
        with the running ones; ``detach`` keeps the loss out of the critics' parameters."""
        x = self.norms[0](x.unsqueeze(0).expand(self.members, *x.shape), train, detach)
        for layer, norm in zip(self.layers, self.norms[1:], strict=True):
            x = norm(torch.relu(layer(x, detach)), train, detach)
        return fp32_head(self.head, x, detach).squeeze(-1)


def brn_mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...], **norm: float) -> MLP:
    """SBX's CrossQ actor trunk: batch renorm on the input, Linear, ReLU, batch renorm per layer."""
    layers: list[nn.Module] = [BatchRenorm(in_dim, **norm)]
    for a, b in itertools.pairwise([in_dim, *hidden]):
        layers += [nn.Linear(a, b), nn.ReLU(), BatchRenorm(b, **norm)]
    layers.append(nn.Linear(hidden[-1] if hidden else in_dim, out_dim))
    return MLP(*layers)


class CrossQ(Agent):
    def __init__(
        self,
        config: CrossQConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.action_scaler = ActionScaler.from_space(action_space).to(self.device)  # actor acts in [-1, 1]
        c = config
        norm = {
            "momentum": c.batch_norm_momentum,
            "eps": c.batch_norm_eps,
            "r_max": c.r_max,
            "d_max": c.d_max,
            "warmup_steps": c.renorm_warmup_steps,
        }
        self.actor = SquashedGaussianActor(obs_dim, act_dim, c.hidden, c.log_std_min, c.log_std_max)
        if c.actor_batch_norm:
            self.actor.net = brn_mlp(obs_dim, 2 * act_dim, c.hidden, **norm)
        self.actor.to(device).eval()  # eval mode (running statistics) except in the actor's loss
        self.critic = BRNCritics(c.num_critics, obs_dim + act_dim, c.critic_hidden, **norm).to(device)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(c.init_temperature), device=device))
        self.target_entropy = float(-act_dim if c.target_entropy is None else c.target_entropy)
        betas = (c.adam_beta1, 0.999)
        self.critic_opt = self.adam(
            self.critic.parameters(), lr=c.critic_learning_rate or c.learning_rate, betas=betas
        )
        groups = [{"params": self.actor.parameters(), "betas": betas}]
        if c.autotune:  # SBX's temperature Adam keeps optax's default beta1 of 0.9
            groups.append({"params": [self.log_alpha], "betas": (0.9, 0.999)})
        self.actor_opt = self.adam(groups, lr=c.learning_rate)
        self.parts = {
            "actor": self.actor,
            "critic": self.critic,
            "critic_opt": self.critic_opt,
            "actor_opt": self.actor_opt,
            "temperature": _ParamHolder(self.log_alpha),
        }
        self._losses = self.maybe_compile(self._losses)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.action_scaler.unscale(self.actor.act(obs, deterministic))

    def _losses(
        self, batch: Batch, alpha: torch.Tensor, update_actor: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Critic loss on the joint batch, plus actor and temperature losses on actor steps, summed for
        one backward pass (disjoint parameters: the target is detached, the actor's Q goes through
        detached critic parameters, the temperature's loss through a detached log-probability)."""
        c = self.config
        n = batch.obs.shape[0]
        with self.autocast():
            actions = self.action_scaler.scale(batch.actions)
            with torch.no_grad():
                next_actions, next_log_prob = self.actor(batch.next_obs)  # eval mode
            # critic: 0.5 sum_m E[(Q_m(s, a) - y)^2], one train-mode pass over [(s, a); (s', a')]
            joint = torch.cat(
                [torch.cat([batch.obs, actions], -1), torch.cat([batch.next_obs, next_actions], -1)]
            )
            q, next_q = self.critic(joint, train=True).split(n, dim=-1)
            with torch.no_grad():
                soft_value = next_q.min(0).values - alpha * next_log_prob
                target = batch.rewards + (1 - batch.terminations) * c.gamma * soft_value
            critic_loss = 0.5 * (q - target).pow(2).mean(-1).sum()
            loss = critic_loss
            metrics = {"losses/critic": critic_loss.detach(), "losses/q_mean": q.detach().mean()}
            if update_actor:
                # actor: E[alpha log pi(a~|s) - min_m Q_m(s, a~)], actor in train mode, critics in eval
                self.actor.train()
                pi, log_prob = self.actor(batch.obs)
                self.actor.eval()
                q_pi = self.critic(torch.cat([batch.obs, pi], -1), train=False, detach=True)
                actor_loss = (alpha * log_prob - q_pi.min(0).values).mean()
                loss = loss + actor_loss
                metrics |= {"losses/actor": actor_loss.detach(), "charts/entropy": -log_prob.detach().mean()}
                if c.autotune:
                    # temperature: -E[log alpha (log pi(a~|s) + target_entropy)] (SBX's, in log alpha)
                    alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
                    loss = loss + alpha_loss
                    metrics["losses/alpha"] = alpha_loss.detach()
        return loss, metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        alpha = self.log_alpha.detach().exp()
        update_actor = (self.num_updates + 1) % self.config.policy_delay == 0
        loss, metrics = self._losses(batch, alpha, update_actor)
        self.critic_opt.zero_grad(set_to_none=True)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        if update_actor:
            self.actor_opt.step()
        self.num_updates += 1
        metrics["charts/alpha"] = alpha
        return metrics


register_method(
    agent_method(
        "crossq",
        "off_policy",
        CrossQConfig,
        CrossQ,
        ("box",),
        "CrossQ: SAC with batch-renormalised critics and no target networks",
    )
)
