"""Diffusion-QL (Wang, Hunt & Zhou, 2023, "Diffusion Policies as an Expressive Policy Class for Offline
Reinforcement Learning").

The policy is a conditional diffusion model over actions in [-1, 1] (T = 5 steps, VP schedule, epsilon
prediction), trained by its denoising loss plus Q-learning through the whole reverse chain:

    L_pi = L_d(theta) - alpha E_s[ Q_phi(s, a_0) ],   a_0 ~ pi_theta(. | s) sampled with gradients  (eq. 3)
    alpha = eta / E|Q_phi(s, a_0)|   (detached; the reference code divides one twin's mean Q by the
                                      other's mean |Q|, picking the twin at random each step)

The critics are twin Q functions with Polyak targets, trained on r + gamma (1 - d) min_i Q'_i(s', a'),
a' drawn from an EMA of the policy (with ``max_q_backup``: the max over 10 such draws per twin, as
the paper does on AntMaze). At evaluation, 50 candidate actions per observation are scored by min Q'
and one is drawn ∝ softmax(Q) (``sample_action`` of the reference code) — one call of ``steer``.

Defaults follow the paper and its reference code (github.com/Zhendong-Wang/Diffusion-Policies-for-
Offline-RL: ``agents/ql_diffusion.py``, ``agents/diffusion.py``, ``agents/model.py``, ``main.py``);
each field says which. Differences: critic and actor losses go through one backward pass and one
fused Adam step, so the actor's Q term sees the critic from before this step's critic update (the
reference updates the critic first); the EMA warms its decay up (``gendm.generative.EMA``) instead of
starting after 1000 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch
from torch import nn

from gendm.agents.base import LR_SCHEDULES, OfflineAgent, OfflineConfig, agent_method
from gendm.core.config import field
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler
from gendm.data.replay import Batch
from gendm.generative import EMA, GaussianDiffusion
from gendm.generative.denoisers import SinusoidalEmbedding
from gendm.generative.diffusion import SCHEDULES
from gendm.nn import EnsembleMLP, mlp
from gendm.nn.mlp import ACTIVATIONS
from gendm.steering import steer


@dataclass
class DiffusionQLConfig(OfflineConfig):
    learning_rate: float = field(3e-4, gt=0)
    """Adam learning rate of policy and critics (paper, locomotion: 3e-4)."""
    lr_schedule: str = field("cosine", choices=LR_SCHEDULES)
    """Learning rates over the run: cosine (decay to 0, the reference's --lr_decay, CosineAnnealingLR on
    both optimisers) or constant."""
    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of the noise network and of each critic (reference model.py and
    Critic: three layers of 256)."""
    activation: str = field("mish", choices=("mish", "silu"))
    """Activation of noise network and critics: mish (reference) or silu. On CPU (torch 2.13) Mish costs
    ~10x SiLU per element, about half of a Diffusion-QL update."""
    time_dim: int = field(16, ge=2)
    """Width of the noise network's timestep embedding (reference MLP t_dim: 16)."""
    tau: float = field(0.005, gt=0, le=1)
    """Polyak coefficient of the target critics (reference: 0.005)."""
    eta: float = field(1.0, ge=0)
    """Weight of the normalised Q term (paper, locomotion: 1.0; AntMaze 0.5-4.5)."""
    diffusion_steps: int = field(5, ge=2)
    """T, the denoising steps, trained and sampled (paper: 5)."""
    schedule: str = field("vp", choices=SCHEDULES)
    """Noise schedule: vp (paper's variance-preserving schedule, reference default beta_schedule='vp'),
    cosine or linear."""
    ema_decay: float = field(0.995, ge=0, lt=1)
    """Decay of the policy's EMA, which samples the critic's next actions (reference ema_decay: 0.995)."""
    ema_every: int = field(5, ge=1)
    """Gradient steps between EMA updates (reference update_ema_every: 5)."""
    max_q_backup: bool = False
    """Back up the max over num_backup_samples next actions per twin (paper: on for AntMaze, off for
    locomotion)."""
    num_backup_samples: int = field(10, ge=1)
    """Next actions drawn per transition for the max-Q backup (reference: 10)."""
    grad_clip: float | None = field(1.0, gt=0)
    """Max gradient norm, for policy and critics separately; None disables (reference Diffusion_QL
    grad_norm default 1.0; its main.py tunes it per task between 1 and 10)."""
    num_candidates: int = field(50, ge=1)
    """Candidate actions per observation at evaluation (reference sample_action: 50)."""
    selector: str = field("softmax", choices=("softmax", "argmax"))
    """How the evaluation picks a candidate: softmax (sample ∝ exp(Q / temperature), the reference's
    sample_action) or argmax."""
    temperature: float = field(1.0, gt=0)
    """Temperature of the softmax selector (reference: 1, a softmax of the raw Q values)."""


class NoiseMLP(nn.Module):
    """The paper's noise network: ``[a_t, emb(t), s] -> hidden (Mish) -> eps`` (reference model.py).

    ``t`` arrives as timestep / T from ``GaussianDiffusion``; the sinusoidal embedding scales it back
    to the integer timestep, as the reference embeds it. ``cond`` is the observation plus
    ``GaussianDiffusion``'s presence flag.
    """

    def __init__(
        self,
        act_dim: int,
        cond_dim: int,
        hidden: tuple[int, ...] = (256, 256, 256),
        time_dim: int = 16,
        steps: int = 5,
        activation: str = "mish",
    ) -> None:
        super().__init__()
        self.time = nn.Sequential(
            SinusoidalEmbedding(time_dim, scale=float(steps)),
            nn.Linear(time_dim, 2 * time_dim),
            ACTIVATIONS[activation](),
            nn.Linear(2 * time_dim, time_dim),
        )
        self.net = mlp(act_dim + time_dim + cond_dim, act_dim, hidden, activation=activation)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t = t.reshape(1).expand(x.shape[0]) if t.numel() == 1 else t
        return self.net(torch.cat([x, self.time(t), cond], -1))


class DiffusionQL(OfflineAgent):
    def __init__(
        self,
        config: DiffusionQLConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        c = config
        obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.action_scaler = ActionScaler.from_space(action_space).to(self.device)
        net = NoiseMLP(act_dim, obs_dim + 1, c.hidden, c.time_dim, c.diffusion_steps, c.activation)
        self.actor = GaussianDiffusion(
            net,
            (act_dim,),
            prediction="eps",
            schedule=c.schedule,
            num_train_steps=c.diffusion_steps,
            cond_dim=obs_dim,
            default_steps=c.diffusion_steps,
            clip_x0=1.0,  # the reference's clip_denoised: predicted clean actions stay in [-1, 1]
        ).to(device)
        self.ema = EMA(self.actor, c.ema_decay)
        self.critic = EnsembleMLP(2, obs_dim + act_dim, 1, c.hidden, c.activation).to(device)
        self.critic_target = EnsembleMLP(2, obs_dim + act_dim, 1, c.hidden, c.activation).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.opt = self.adam([*self.actor.parameters(), *self.critic.parameters()], lr=c.learning_rate)
        self.parts |= {
            "actor": self.actor,
            "actor_ema": self.ema,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "opt": self.opt,
        }
        self._target_pairs = (list(self.critic_target.parameters()), list(self.critic.parameters()))
        self._losses = self.maybe_compile(self._losses)

    # ------------------------------------------------------------------------------------ acting
    def _q_target(self, actions: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """min_i Q'_i(s, a) for normalised observations and actions in [-1, 1]: ``(batch,)``."""
        return self.critic_target(torch.cat([obs, actions], -1)).squeeze(-1).min(0).values

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """``num_candidates`` policy samples per observation, one chosen by ``selector`` over min Q'
        (the method's evaluation rule, so ``deterministic`` does not change it)."""
        c = self.config
        result = steer(
            self.actor,  # the reference evaluates the policy itself, not its EMA
            self._q_target,
            num_candidates=c.num_candidates,
            cond=self.obs_norm(obs),
            selector=c.selector,
            temperature=c.temperature,
            solver="ddpm",
            steps=c.diffusion_steps,
        )
        return self.action_scaler.unscale(result.samples, clip=True)

    @torch.no_grad()
    def q_value(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min_i Q'_i(s, a) for raw observations and env-unit actions: ``(batch,)``."""
        return self._q_target(self.action_scaler.scale(actions), self.obs_norm(obs))

    @torch.no_grad()
    def policy_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """One unselected sample of the policy per observation (env units)."""
        a = self.actor.sample(cond=self.obs_norm(obs), solver="ddpm", steps=self.config.diffusion_steps)
        return self.action_scaler.unscale(a, clip=True)

    # ------------------------------------------------------------------------------------ update
    def _next_q(self, next_obs: torch.Tensor) -> torch.Tensor:
        """The backup's min_i Q'_i(s', a'), a' from the EMA policy (max over draws with max_q_backup)."""
        c = self.config
        sample = dict(solver="ddpm", steps=c.diffusion_steps)
        if not c.max_q_backup:
            next_a = self.ema.module.sample(cond=next_obs, **sample)
            return self._q_target(next_a, next_obs)
        m, b = c.num_backup_samples, next_obs.shape[0]
        rep = next_obs.repeat_interleave(m, dim=0)
        q = self.critic_target(torch.cat([rep, self.ema.module.sample(cond=rep, **sample)], -1))
        return q.view(2, b, m).max(-1).values.min(0).values

    def _losses(self, batch: Batch, twin: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Critic loss plus policy loss, summed for one backward pass: they touch disjoint parameters
        (the policy's Q term goes through detached critic weights)."""
        c = self.config
        with self.autocast():
            obs, next_obs = self.obs_norm(batch.obs), self.obs_norm(batch.next_obs)
            actions = self.action_scaler.scale(batch.actions, clip=True)
            with torch.no_grad():
                target = batch.rewards + (1 - batch.terminations) * c.gamma * self._next_q(next_obs)
            q = self.critic(torch.cat([obs, actions], -1)).squeeze(-1)
            critic_loss = (q - target).pow(2).mean(-1).sum()
            bc_loss = self.actor.loss(actions, obs)
            new_actions = self.actor.sample(cond=obs, solver="ddpm", steps=c.diffusion_steps, grad=True)
            q_new = self.critic(torch.cat([obs, new_actions], -1), detach=True).squeeze(-1)
            q_loss = -q_new[twin].mean() / q_new[1 - twin].abs().mean().detach()
            actor_loss = bc_loss + c.eta * q_loss
        metrics = {
            "losses/critic": critic_loss.detach(),
            "losses/bc": bc_loss.detach(),
            "losses/ql": q_loss.detach(),
            "losses/actor": actor_loss.detach(),
            "losses/q_mean": q.detach().mean(),
        }
        return critic_loss + actor_loss, metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        if c.lr_schedule == "cosine":
            self.opt.param_groups[0]["lr"] = self.cosine_lr(c.learning_rate)
        twin = int(torch.randint(2, ()))  # CPU generator: no device sync
        loss, metrics = self._losses(batch, twin)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip is not None:
            metrics["charts/actor_grad_norm"] = nn.utils.clip_grad_norm_(self.actor.parameters(), c.grad_clip)
            metrics["charts/critic_grad_norm"] = nn.utils.clip_grad_norm_(
                self.critic.parameters(), c.grad_clip
            )
        self.opt.step()
        torch._foreach_lerp_(self._target_pairs[0], self._target_pairs[1], c.tau)
        if self.num_updates % c.ema_every == 0:
            self.ema.update()
        self.num_updates += 1
        return metrics


register_method(
    agent_method(
        "diffusion_ql",
        "offline",
        DiffusionQLConfig,
        DiffusionQL,
        ("box",),
        "Diffusion-QL: diffusion policy trained by denoising plus Q through the reverse chain",
    )
)
