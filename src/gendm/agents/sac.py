"""Soft Actor-Critic (Haarnoja et al., 2018; automatic temperature, Haarnoja et al., 2018b).

A tanh-squashed Gaussian actor, an ensemble of Q critics (two by default: clipped double Q) held as
one stacked-parameter network with Polyak-averaged targets, and a temperature tuned toward
``target_entropy = -dim(A)``. ``SAC._losses`` is the method, top to bottom: the soft Bellman target
from the target critics' minimum and the next action's log-probability, the critics' squared error,
the reparameterised actor loss against the critics' minimum, and the temperature loss. They follow
Stable-Baselines3's SAC (1/2 on the squared error, the minimum over critics in target and actor loss,
the temperature loss in log alpha, log std clamped to [-20, 2]), except that the three losses share one
backward pass and one fused Adam step, so the actor sees the critic from before this step's critic
update, and that the tanh correction of log pi is exact (SB3 adds 1e-6 inside its log). Defaults
follow SB3 / CleanRL as each field says. Variants: more critics (``num_critics``), a layer-normed
critic, and dropout in it (``critic_layer_norm``, ``critic_dropout``: with both, DroQ's critic,
Hiraoka et al., 2022; DroQ itself also takes many critic steps per env step, ``gradient_steps``), a
target that takes its minimum over a random subset of the target critics (``target_subset``, REDQ's
in-target minimisation, Chen et al., 2021) and an actor loss on the critics' mean (``actor_q``, as in
REDQ's and DroQ's reference code). ``agents/redq.py`` and ``agents/droq.py`` preset these options.

Speed path: ``gendm.agents.sac_handgrad`` derives the same gradients by hand, with no autograd graph
and stacked passes; ``SACConfig.update`` says when it runs (tests/test_sac.py checks it against
``_losses``). Either way: one fused Adam call per update, the target update as one
``torch._foreach_lerp_``, no host sync in ``update``, and acting skips the log-probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from gendm.agents.base import Agent, OffPolicyConfig, agent_method
from gendm.agents.sac_handgrad import HandGradients
from gendm.core.config import check
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler
from gendm.data.replay import Batch
from gendm.nn import EnsembleMLP, mlp
from gendm.nn.mlp import fp32_head

UPDATES = ("auto", "reference", "handgrad")
ACTOR_Q = ("min", "mean")


@dataclass
class SACConfig(OffPolicyConfig):
    learning_rate: float = 3e-4
    """Adam learning rate for the actor and the temperature (SB3 and CleanRL: 3e-4)."""
    critic_learning_rate: float | None = None
    """Adam learning rate for the critics; None uses learning_rate (SB3). CleanRL uses 1e-3."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics (SB3 / CleanRL: 256, 256)."""
    tau: float = 0.005
    """Polyak coefficient of the target critics (SB3 / CleanRL: 0.005)."""
    num_critics: int = 2
    """Critics in the ensemble; targets use their minimum (clipped double Q: 2)."""
    critic_layer_norm: bool = False
    """Layer norm (a gain per critic) after each hidden layer of the critics, as in DroQ's critic."""
    critic_dropout: float = 0.0
    """Dropout rate in each hidden layer of the critics, before the layer norm, in every critic pass
    including the target's (DroQ, Hiraoka et al., 2022; sbx's DroQ: 0.01 with the layer norm)."""
    init_temperature: float = 1.0
    """Initial entropy temperature alpha (SB3 'auto' starts at 1.0)."""
    autotune: bool = True
    """Tune alpha toward target_entropy (SB3 ent_coef='auto')."""
    target_entropy: float | None = None
    """Target policy entropy; None means -dim(action space)."""
    policy_frequency: int = 1
    """Gradient steps between actor updates (SB3: 1; CleanRL: 2, with that many actor steps)."""
    target_network_frequency: int = 1
    """Gradient steps between target updates (SB3 / CleanRL: 1)."""
    log_std_min: float = -20.0
    """Lower clamp of the actor's log std (SB3: -20)."""
    log_std_max: float = 2.0
    """Upper clamp of the actor's log std (SB3: 2)."""
    target_subset: int | None = None
    """Target critics the soft Bellman target takes its minimum over: a random subset of this many,
    drawn anew each update from torch's generator on the agent's device (so a CPU run resumes exactly)
    and evaluated alone (REDQ, Chen et al., 2021: M = 2 of N = 10 critics); None takes all
    num_critics (clipped double Q)."""
    actor_q: str = "min"
    """How the actor's loss combines the critics: min (SAC, SB3) or mean over all of them (REDQ's and
    DroQ's reference code)."""
    update: str = "auto"
    """Gradient code: reference (the autograd losses of SAC._losses), handgrad (the same gradients
    derived by hand, gendm.agents.sac_handgrad; not with critic_layer_norm, critic_dropout,
    target_subset or actor_q='mean'), or auto:
    handgrad where it supports the config, as it was the faster in every case measured (one CPU thread,
    benchmarks/loop_parts.py at HalfCheetah sizes: 8.8-9.0 vs 9.4-10.0 ms per update in fp32, 5.6-5.8
    vs 7.4-7.5 ms in bf16; also with 5 and 10 critics and at Pendulum sizes; CUDA not measured)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.learning_rate > 0, "learning_rate", "must be > 0.")
        check(0 < self.tau <= 1, "tau", f"must be in (0, 1], got {self.tau}.")
        check(self.num_critics >= 1, "num_critics", "must be >= 1.")
        check(0 <= self.critic_dropout < 1, "critic_dropout", f"must be in [0, 1), got {self.critic_dropout}")
        check(
            self.target_subset is None or 1 <= self.target_subset <= self.num_critics,
            "target_subset",
            f"must be None or in [1, num_critics={self.num_critics}], got {self.target_subset}.",
        )
        actor_qs = ", ".join(ACTOR_Q)
        check(self.actor_q in ACTOR_Q, "actor_q", f"must be one of {actor_qs}, got {self.actor_q!r}.")
        check(self.init_temperature > 0, "init_temperature", "must be > 0.")
        check(self.policy_frequency >= 1, "policy_frequency", "must be >= 1.")
        check(self.log_std_min < self.log_std_max, "log_std_min", "must be < log_std_max.")
        check(self.update in UPDATES, "update", f"must be one of {', '.join(UPDATES)}, got {self.update!r}.")
        unsupported = handgrad_unsupported(self)
        check(
            self.update != "handgrad" or unsupported is None,
            unsupported or "update",
            "update='handgrad' (the hand-derived gradients) covers only the plain ReLU critic, whose "
            "minimum over all critics enters target and actor loss; leave "
            f"{unsupported} at its default, or use update='reference' (or 'auto', which picks it).",
        )


def handgrad_unsupported(config: SACConfig) -> str | None:
    """The first field whose value the hand-derived update does not support, or None."""
    if config.critic_layer_norm:
        return "critic_layer_norm"
    if config.critic_dropout > 0:
        return "critic_dropout"
    if config.target_subset is not None:
        return "target_subset"
    if config.actor_q != "min":
        return "actor_q"
    return None


def resolve_update(config: SACConfig) -> str:
    """``config.update`` with ``auto`` resolved (see ``SACConfig.update``)."""
    if config.update != "auto":
        return config.update
    return "reference" if handgrad_unsupported(config) else "handgrad"


class SquashedGaussianActor(nn.Module):
    """obs -> tanh(N(mean, std)) in [-1, 1], with the log-probability of the squashed sample."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], log_std_min: float, log_std_max: float
    ):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        if deterministic:
            return torch.tanh(mean), None
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        noise = torch.randn_like(mean)
        x = mean + log_std.exp() * noise  # reparameterised: gradients reach mean and log std
        # log N(x; mean, std) - log|d tanh(x)/dx|, the latter written stably as 2(log 2 - x - softplus(-2x))
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - x - F.softplus(-2 * x))).sum(-1)
        return torch.tanh(x), log_prob

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """The action of ``forward`` (the same draw from the global generator) without its
        log-probability, which acting does not need: half the kernels of a step's action."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        if deterministic:
            return torch.tanh(mean)
        noise = torch.randn_like(mean)
        return torch.tanh(mean + log_std.clamp(self.log_std_min, self.log_std_max).exp() * noise)


class Critics(EnsembleMLP):
    """``members`` Q-networks ``(obs, action) -> (members, batch, 1)``, as ``EnsembleMLP``; each hidden
    layer optionally followed by dropout and a layer norm with per-member gains (DroQ: Linear, Dropout,
    LayerNorm, ReLU). Without either it computes exactly what ``EnsembleMLP`` does. ``member`` may also
    be a 1-D index tensor: those members alone, ``(len(member), batch, 1)``, from their gathered
    weights (REDQ's target subset)."""

    def __init__(
        self, members: int, in_dim: int, hidden: tuple[int, ...], layer_norm: bool, dropout: float
    ) -> None:
        super().__init__(members, in_dim, 1, hidden)
        self.dropout = dropout
        self.norms = None
        if layer_norm:
            self.norms = nn.ModuleList(_EnsembleLayerNorm(members, width) for width in hidden)

    def forward(
        self, x: torch.Tensor, detach: bool = False, member: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        layers = self.layers
        if isinstance(member, torch.Tensor):
            layers = [_MemberSubset(layer) for layer in layers]
        for i, layer in enumerate(layers[:-1]):
            x = layer(x, detach, member)
            if self.dropout:
                x = F.dropout(x, self.dropout, self.training)
            if self.norms is not None:
                x = self.norms[i](x, detach, member)
            x = self.act(x)
        return fp32_head(layers[-1], x, detach, member)


class _MemberSubset:
    """An ``EnsembleLinear`` restricted to the members of an index tensor: one batched matmul over their
    gathered weights, ``(batch, in)`` or ``(len(members), batch, in)`` -> ``(len(members), batch, out)``."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer

    def __call__(self, x: torch.Tensor, detach: bool, members: torch.Tensor) -> torch.Tensor:
        w, b = self.layer.weight.index_select(0, members), self.layer.bias.index_select(0, members)
        if detach:
            w, b = w.detach(), b.detach()
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(len(members), *x.shape)
        return torch.baddbmm(b, x, w)


class _EnsembleLayerNorm(nn.Module):
    """``nn.LayerNorm`` over the last dimension with a gain and bias per ensemble member."""

    def __init__(self, members: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, width))
        self.bias = nn.Parameter(torch.zeros(members, 1, width))

    def forward(
        self, x: torch.Tensor, detach: bool = False, member: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        if isinstance(member, torch.Tensor):
            w, b = w.index_select(0, member), b.index_select(0, member)
        elif member is not None:
            w, b = w[member], b[member]
        return torch.addcmul(b, F.layer_norm(x, x.shape[-1:]), w)


class SAC(Agent):
    def __init__(
        self,
        config: SACConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.action_scaler = ActionScaler.from_space(action_space).to(self.device)  # actor acts in [-1, 1]
        c = config
        self.actor = SquashedGaussianActor(obs_dim, act_dim, c.hidden, c.log_std_min, c.log_std_max).to(
            device
        )
        critic_shape = (c.num_critics, obs_dim + act_dim, c.hidden, c.critic_layer_norm, c.critic_dropout)
        self.critic = Critics(*critic_shape).to(device)
        self.critic_target = Critics(*critic_shape).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(c.init_temperature), device=device))
        self.target_entropy = float(-act_dim if c.target_entropy is None else c.target_entropy)
        groups = [
            {"params": self.actor.parameters()},
            {"params": self.critic.parameters(), "lr": c.critic_learning_rate or c.learning_rate},
        ]
        if c.autotune:  # a fixed temperature stays out: a parameter without gradients forces Adam's slow path
            groups.append({"params": [self.log_alpha]})
        self.opt = self.adam(groups, lr=c.learning_rate)  # one fused step for all of them
        self.parts = {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "opt": self.opt,
            "temperature": _ParamHolder(self.log_alpha),
        }
        self._targets, self._sources = list(self.critic_target.parameters()), list(self.critic.parameters())
        # the path that computes the gradients (SACConfig.update): these losses, or the same derived by hand
        self.update_path = resolve_update(c)
        self._handgrad = HandGradients(self) if self.update_path == "handgrad" else None
        if self._handgrad is None:
            self._losses = self.maybe_compile(self._losses)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.action_scaler.unscale(self.actor.act(obs, deterministic))

    def _q(self, obs: torch.Tensor, action: torch.Tensor, detach: bool = False) -> torch.Tensor:
        return self.critic(torch.cat([obs, action], -1), detach).squeeze(-1)  # (critics, batch)

    def _target_members(self) -> torch.Tensor | None:
        """The target critics this update's target takes its minimum over: ``target_subset`` distinct
        indices drawn from torch's generator on the agent's device, or None for all of them."""
        m = self.config.target_subset
        if m is None:
            return None
        return torch.randperm(self.config.num_critics, device=self.device)[:m]

    @torch.no_grad()
    def _soft_target(self, batch: Batch, alpha: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        """The soft Bellman target ``r + gamma (1 - term) (min_m Q'_m(s', a') - alpha log pi(a'|s'))``,
        ``a' ~ pi(s')``, the minimum over the target critics ``members`` (None: all)."""
        next_actions, next_log_prob = self.actor(batch.next_obs)
        next_q = self.critic_target(torch.cat([batch.next_obs, next_actions], -1), member=members).squeeze(-1)
        soft_value = next_q.min(0).values - alpha * next_log_prob
        return batch.rewards + (1 - batch.terminations) * self.config.gamma * soft_value

    def _losses(
        self, batch: Batch, alpha: torch.Tensor, update_actor: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Critic, actor (on actor steps) and temperature (with autotune) losses, summed for one
        backward pass: they touch disjoint parameters (the target under no_grad, the actor's Q through
        detached critic weights, the temperature's loss on a detached log-probability), so their
        gradients are exactly those of separate updates."""
        c = self.config
        with self.autocast():
            actions = self.action_scaler.scale(batch.actions)
            # critic: 0.5 sum_m E[(Q_m(s, a) - y)^2] with the soft Bellman target
            # y = r + gamma (1 - term) (min_m Q'_m(s', a') - alpha log pi(a'|s')), a' ~ pi(s'),
            # the minimum over all target critics or over a random subset of them (target_subset)
            target = self._soft_target(batch, alpha, self._target_members())
            q = self._q(batch.obs, actions)
            critic_loss = 0.5 * (q - target).pow(2).mean(-1).sum()
            loss = critic_loss
            metrics = {"losses/critic": critic_loss.detach(), "losses/q_mean": q.detach().mean()}
            if update_actor:
                # actor: E[alpha log pi(a~|s) - min_m Q_m(s, a~)], a~ = tanh(mean + std * noise)
                # (the mean over m with actor_q='mean')
                pi, log_prob = self.actor(batch.obs)
                q_pi = self._q(batch.obs, pi, detach=True)
                q_pi = q_pi.min(0).values if c.actor_q == "min" else q_pi.mean(0)
                actor_loss = (alpha * log_prob - q_pi).mean()
                loss = loss + actor_loss
                metrics |= {"losses/actor": actor_loss.detach(), "charts/entropy": -log_prob.detach().mean()}
                if c.autotune:
                    # temperature: -E[log alpha (log pi(a~|s) + target_entropy)] (SB3's, in log alpha)
                    alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
                    loss = loss + alpha_loss
                    metrics["losses/alpha"] = alpha_loss.detach()
        return loss, metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        alpha = self.log_alpha.detach().exp()
        update_actor = self.num_updates % c.policy_frequency == 0
        if self._handgrad is None:
            loss, metrics = self._losses(batch, alpha, update_actor)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        else:  # the same gradients, derived by hand
            metrics = self._handgrad.set_gradients(batch, alpha, update_actor)
        self.opt.step()
        if self.num_updates % c.target_network_frequency == 0:
            torch._foreach_lerp_(self._targets, self._sources, c.tau)
        self.num_updates += 1
        metrics["charts/alpha"] = alpha
        return metrics


class _ParamHolder(nn.Module):
    """Lets a bare parameter (the log temperature) travel in ``parts`` like a module."""

    def __init__(self, param: nn.Parameter) -> None:
        super().__init__()
        self.param = param


register_method(
    agent_method(
        "sac",
        "off_policy",
        SACConfig,
        SAC,
        ("box",),
        "Soft Actor-Critic, twin critics, auto temperature",
    )
)
