"""IDQL (Hansen-Estruch et al., 2023, "IDQL: Implicit Q-Learning as an Actor-Critic Method with Diffusion
Policies").

IDQL keeps IQL's critic and replaces its advantage-weighted Gaussian actor by two pieces:

1. a diffusion model of the *behaviour* policy mu(a | s), trained by plain denoising on the dataset's
   actions (no Q term, no weights: the ``bc`` actor objective of the reference code);
2. the IQL critic (expectile V, twin Q on r + gamma V(s'); ``gendm.agents.critics.IQLCritic``),
   trained exactly as in IQL.

Acting draws N candidate actions from the behaviour model for each observation and selects among
them by the critic — one call of the ``steer`` operator. IDQL reads the expectile critic as the
implicit actor pi(a | s) ∝ mu(a | s) w(s, a) with w = |tau - 1(Q - V < 0)| (paper eq. 10 without the
1/|Q - V| factor, as the reference code's ``sample_implicit_policy``), so the candidates are
importance-resampled by w (``selector="expectile"``); the reference code's default evaluation is
greedy, argmax over min Q' of the candidates (``eval_actions``; ``selector="argmax"``, the default
here); ``softmax`` samples ∝ exp(Q / temperature).

Defaults follow the reference code's D4RL launcher (``launcher/examples/train_ddpm_iql_offline.py``
and ``DDPMIQLLearner`` of github.com/philippe-eecs/IDQL), each field says which. Differences: the
denoiser is gendm's pre-norm residual MLP (``make_denoiser("mlp")``: LayerNorm, residual blocks,
dropout — the reference's ``MLPResNetV3`` LN-ResNet, but with hidden-width blocks where the
reference widens 4x, and the observation added as an embedding instead of concatenated to the
input); one denoising step per critic step on the same batch (the reference takes two actor steps
on two halves of a 512 batch per critic step); the ``ddpm`` solver uses the posterior variance
(the reference samples with beta_t) and clips the predicted clean action to [-1, 1] (the reference
clips the running sample). Critic and denoiser losses touch disjoint parameters and go through one
backward pass and one fused Adam step.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from gendm.agents.base import LR_SCHEDULES, OfflineAgent, OfflineConfig, agent_method
from gendm.agents.critics import IQLCritic, IQLCriticConfig, ReturnScaled, expectile_weights
from gendm.core.config import field
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler
from gendm.data.replay import Batch
from gendm.generative import EMA, GaussianDiffusion
from gendm.generative.diffusion import SCHEDULES
from gendm.steering import steer

SELECTORS = ("argmax", "softmax", "expectile")


@dataclass
class IDQLConfig(IQLCriticConfig, OfflineConfig):
    actor_learning_rate: float = field(3e-4, gt=0)
    """Adam learning rate of the diffusion behaviour model (reference launcher actor_lr: 3e-4)."""
    actor_lr_schedule: str = field("cosine", choices=LR_SCHEDULES)
    """Behaviour model's learning rate over the run: cosine (decay to 0 over the run's gradient steps,
    the reference's decay_steps = its 3M steps) or constant."""
    critic_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the Q twins and V (reference critic_hidden_dims: 256, 256)."""
    diffusion_steps: int = field(5, ge=2)
    """T, the denoising steps of the behaviour model, trained and sampled (paper and reference: 5)."""
    schedule: str = field("vp", choices=SCHEDULES)
    """Noise schedule: vp (reference beta_schedule 'vp', beta in [0.1, 10]), cosine or linear."""
    denoiser_hidden: int = field(256, ge=1)
    """Width of the residual MLP denoiser (reference MLPResNetV3 hidden_dim: 256)."""
    denoiser_depth: int = field(3, ge=1)
    """Residual blocks of the denoiser (reference launcher actor_num_blocks: 3)."""
    denoiser_dropout: float = field(0.1, ge=0, lt=1)
    """Dropout inside the denoiser's blocks while training (reference launcher actor_dropout_rate: 0.1)."""
    ema_decay: float = field(0.999, ge=0, lt=1)
    """Decay of the behaviour model's EMA, which acting samples from (reference actor_tau: 0.001)."""
    num_candidates: int = field(64, ge=1)
    """N, candidate actions drawn per observation (reference launcher N: 64; its evaluation sweeps
    16, 64 and 256)."""
    selector: str = field("argmax", choices=SELECTORS)
    """How a candidate is chosen, at evaluation too: argmax (greedy on min Q', the reference's
    eval_actions), softmax (sample ∝ exp(Q / temperature)) or expectile (IDQL's implicit policy:
    sample ∝ |tau - 1(Q < V)|, the reference's sample_implicit_policy)."""
    temperature: float = field(1.0, gt=0)
    """Temperature of the softmax selector."""


class IDQL(ReturnScaled, OfflineAgent):
    def __init__(
        self,
        config: IDQLConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        c = config
        obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.action_scaler = ActionScaler.from_space(action_space).to(self.device)
        # The behaviour policy mu(a | s): eps-prediction diffusion over actions in [-1, 1].
        self.actor = GaussianDiffusion(
            "mlp",
            (act_dim,),
            prediction="eps",
            schedule=c.schedule,
            num_train_steps=c.diffusion_steps,
            cond_dim=obs_dim,
            default_steps=c.diffusion_steps,
            clip_x0=1.0,
            net_kwargs={
                "hidden": c.denoiser_hidden,
                "depth": c.denoiser_depth,
                "dropout": c.denoiser_dropout,
            },
        ).to(device)
        self.ema = EMA(self.actor, c.ema_decay)
        self.critic = IQLCritic(obs_dim, act_dim, c.critic_hidden, c.num_critics).to(device)
        groups = [
            {"params": self.actor.parameters()},
            {"params": self.critic.trainable(), "lr": c.critic_learning_rate},
        ]
        self.opt = self.adam(groups, lr=c.actor_learning_rate)  # one fused step for both
        self.parts |= {"actor": self.actor, "actor_ema": self.ema, "critic": self.critic, "opt": self.opt}
        self._losses = self.maybe_compile(self._losses)

    # ------------------------------------------------------------------------------------ acting
    def _score(self, actions: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """The selection score of candidates (normalised obs, actions in [-1, 1]): min Q', or for the
        expectile selector log w, so that softmax at temperature 1 samples ∝ w."""
        q = self.critic.q_target(obs, actions)
        if self.config.selector != "expectile":
            return q
        return expectile_weights(q - self.critic.v(obs), self.config.expectile).log()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """N behaviour samples per observation from the EMA model, one selected by ``selector``
        (the method's evaluation rule, so ``deterministic`` does not change it)."""
        c = self.config
        expectile = c.selector == "expectile"
        result = steer(
            self.ema.module,
            self._score,
            num_candidates=c.num_candidates,
            cond=self.obs_norm(obs),
            selector="softmax" if expectile else c.selector,
            temperature=1.0 if expectile else c.temperature,
            solver="ddpm",
            steps=c.diffusion_steps,
        )
        return self.action_scaler.unscale(result.samples, clip=True)

    @torch.no_grad()
    def q_value(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min_i Q'_i(s, a) for raw observations and env-unit actions: ``(batch,)``."""
        return self.critic.q_target(self.obs_norm(obs), self.action_scaler.scale(actions))

    @torch.no_grad()
    def behaviour_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """One unselected sample of the behaviour model per observation (env units)."""
        a = self.ema.module.sample(cond=self.obs_norm(obs), solver="ddpm", steps=self.config.diffusion_steps)
        return self.action_scaler.unscale(a, clip=True)

    # ------------------------------------------------------------------------------------ update
    def _losses(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        with self.autocast():
            obs, next_obs = self.obs_norm(batch.obs), self.obs_norm(batch.next_obs)
            actions = self.action_scaler.scale(batch.actions, clip=True)
            critic_loss, metrics, _ = self.critic.losses(
                obs,
                actions,
                batch.rewards * self.reward_scale,
                next_obs,
                batch.terminations,
                c.gamma,
                c.expectile,
            )
            diffusion_loss = self.actor.loss(actions, obs)
        metrics["losses/diffusion"] = diffusion_loss.detach()
        return critic_loss + diffusion_loss, metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        if c.actor_lr_schedule == "cosine":
            self.opt.param_groups[0]["lr"] = self.cosine_lr(c.actor_learning_rate)
        loss, metrics = self._losses(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.critic.update_target(c.tau)
        self.ema.update()
        self.num_updates += 1
        return metrics


register_method(
    agent_method(
        "idql",
        "offline",
        IDQLConfig,
        IDQL,
        ("box",),
        "IDQL: IQL critic + diffusion behaviour policy, candidates selected by Q",
    )
)
