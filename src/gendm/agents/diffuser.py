"""Diffuser (Janner, Du, Tenenbaum & Levine, 2022, "Planning with Diffusion for Flexible Behavior Synthesis").

A diffusion model over whole state-action windows ``tau = (s_0, a_0, ..., s_{H-1}, a_{H-1})`` of the
dataset, each step the vector ``[normalised obs, normalised action]``, so a sample is an ``(H, obs_dim
+ act_dim)`` array denoised by a 1-D temporal U-Net (``make_denoiser("unet", ...)``). Planning is
inpainting: the first state of the window is fixed to the current observation (``Inpaint``, exact in
the result) and the model fills in a plausible future; the agent executes the plan's first action (or
its first ``replan_every`` actions) and plans again.

A value model ``J(tau)`` regresses the discounted return from the window's first step to the end of
its episode (``sum_k gamma^k r_{t+k}``, Diffuser's ``ValueDataset``; terminal rewards plus
``termination_penalty``). It picks plans two ways (``planning``):

- ``guided`` — one plan per observation, sampled with value guidance: after each denoising step's
  prediction the sample climbs ``guide_scale * (1 - abar_t) * grad_x J(x0_hat(x_t))``
  (``GaussianDiffusion.sample(guide=...)``). **Difference from the paper**: Diffuser trains J on
  *noised* windows with a time input and follows ``grad_x J(x_t, t)``; gendm trains J on *clean*
  windows and differentiates through the denoiser's clean prediction ``x0_hat`` (the DPS-style
  estimate), so one J serves guidance and sorting. J is regressed on standardised returns, so
  ``guide_scale`` is in units of the dataset's return std (Diffuser's scale, 0.1 on raw returns with
  0.0001-0.001 overrides per task, is not comparable). Through an x0-predicting network the gradient
  is weak at high noise, where ``x0_hat`` hardly depends on ``x_t``.
- ``sorted`` — ``num_plans`` unguided plans per observation, the one with the highest J executed
  (``steer(model, J, selector="argmax")``, Diffuser's ``sort_by_values``).
- ``both`` — ``num_plans`` guided plans, the highest J executed: what Diffuser's ``GuidedPolicy``
  does (64 guided samples sorted by value).
- ``none`` — one unguided plan (the behaviour prior alone; an ablation baseline).

Training follows the released code (``config/locomotion.py``): x0 prediction (``predict_epsilon=False``),
cosine schedule with T=20, L2 loss with weight 10 on the first action (the one executed), observations
and actions standardised with the dataset's mean and std (``GaussianNormalizer``), EMA weights
(0.995, updated every 10 steps) for planning, Adam 2e-4, windows allowed to run past their episode's
end (``use_padding=True``). The first state is never learned (it is always inpainted: weight 0).

Terminal and padded steps. Windows that run past the end of an episode repeat its last step; those
steps get zero loss weight (``is_pad``), so the model is not taught what follows an episode's end. What
a termination means enters through J: the terminal transition's reward gets ``termination_penalty``
(Diffuser: -100 on D4RL locomotion, where every termination is a fall; 0 here because in gendm's
tasks a termination can be a success) and the return stops there, while J still sees the padded
window (the repeated terminal state). Returns of truncated episodes stop at the truncation (no
bootstrap, as in Diffuser). During evaluation a plan may run into a termination; the episode ends
and ``reset_episodes`` drops its queued actions.

Both losses (denoising and value regression) touch disjoint parameters and go through one backward
pass and one fused Adam step.

The start state reaches the denoiser two ways: inpainting (exact in the result) and, by default
(``condition_on_start``), as the denoiser's FiLM condition. Diffuser's ``TemporalUnet`` ignores its
condition; instead its training and sampling write the *clean* start state into the noisy input at
every level, so the network always sees it. gendm's inpainting re-noises known entries to the current
level (consistent with the ordinary denoising loss), which hides the start state at high noise: an
unconditional model trained that way plans trajectories whose second state jumps away from the
first (TwoPathReach, a small U-Net after 600 steps: 0.49 position error on that step vs 0.03 on the
others; the plan ignores where the agent is). The condition restores what Diffuser's clean insertion
provides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from gendm.agents.acting import ActionQueue
from gendm.agents.base import OfflineAgent, OfflineConfig, agent_method
from gendm.core.config import check, field
from gendm.core.errors import ConfigError
from gendm.core.methods import register_method
from gendm.data.dataset import OfflineDataset
from gendm.data.samplers import TrajectorySampler, window_indices
from gendm.generative import EMA, GaussianDiffusion, Inpaint
from gendm.generative.diffusion import PREDICTIONS, SCHEDULES
from gendm.nn import Normalizer
from gendm.nn.mlp import fp32_head
from gendm.steering import steer

PLANNING = ("guided", "sorted", "both", "none")


@dataclass
class DiffuserConfig(OfflineConfig):
    gamma: float = 0.997
    """Discount of the value target J (Diffuser's planning config loads values trained with 0.997; its
    values config default is 0.99)."""
    batch_size: int = 64
    """Windows per gradient step (Diffuser: 32 with 2 accumulation steps, i.e. 64 per Adam step)."""
    normalize_obs: bool = True
    """Standardise observations with the dataset's mean and std (Diffuser's GaussianNormalizer)."""
    learning_rate: float = field(2e-4, gt=0)
    """Adam learning rate of the diffusion model and J (Diffuser: 2e-4 for both)."""
    horizon: int = field(32, ge=2)
    """Window length H in steps (Diffuser locomotion: 32; a multiple of 2 ** (len(dims) - 1))."""
    num_diffusion_steps: int = field(20, ge=2)
    """Diffusion timesteps T of training (Diffuser locomotion: n_diffusion_steps = 20)."""
    prediction: str = field("x0", choices=PREDICTIONS)
    """Network target: x0, eps or v (Diffuser: predict_epsilon=False, i.e. x0)."""
    schedule: str = field("cosine", choices=SCHEDULES)
    """Noise schedule: cosine or linear (Diffuser: cosine_beta_schedule)."""
    dims: tuple[int, ...] = field((32, 64, 128, 256), ge=1)
    """Channels per U-Net level (Diffuser: dim 32, dim_mults (1, 2, 4, 8))."""
    time_dim: int = field(32, ge=1)
    """Width of the sinusoidal time features (Diffuser: dim = 32; the embedding MLP is 4x wider)."""
    condition_on_start: bool = True
    """Also give the denoiser the start state as its condition (FiLM), besides inpainting it. gendm's
    inpainting re-noises the known entries, so an unconditional net barely sees the start state at high
    noise and its plans jump away from it (Diffuser inserts the clean state into the noisy input in
    training and sampling instead); False is the unconditional, inpainting-only model."""
    action_weight: float = field(10.0, ge=0)
    """Loss weight of the first action of a window, the executed one (Diffuser: action_weight 10)."""
    value_dims: tuple[int, ...] = field((32, 64, 128, 256), ge=1)
    """Channels per level of J's convolutional encoder (Diffuser's ValueFunction: as the U-Net)."""
    ema_decay: float = field(0.995, ge=0, lt=1)
    """EMA decay of the weights that plan (Diffuser: 0.995; where Diffuser copies the raw weights for
    its first 2000 steps, gendm's EMA warms its decay up)."""
    ema_every: int = field(10, ge=1)
    """Gradient steps between EMA updates (Diffuser: update_ema_every 10)."""
    termination_penalty: float = 0.0
    """Added to the reward of terminal transitions in J's target (Diffuser: -100 on D4RL locomotion,
    where terminations are falls; 0 here because a termination may be a success)."""
    planning: str = field("both", choices=PLANNING)
    """How a plan is picked: guided, sorted, both (guided then sorted; Diffuser's GuidedPolicy) or
    none (one unguided plan)."""
    num_plans: int = field(64, ge=1)
    """Plans sampled per observation for sorted / both (Diffuser: batch_size 64 at planning time)."""
    guide_scale: float = field(1.0, ge=0)
    """Value-guidance step in units of J's return std, times the level's variance (gendm's units, see the
    module docstring; Diffuser's 0.1 with per-task 0.001 / 0.0001 is on raw returns). Mild, as in
    Diffuser's overrides: on TwoPathReach (3 seeds) 1 raised single plans' J by 0.03-0.15 return std,
    10 by ~0.1 with plans still dynamically plausible, sorting 16 plans by 0.1-0.2."""
    replan_every: int = field(1, ge=1)
    """Actions of a plan executed before planning again (Diffuser: 1, replan at every step)."""
    solver: str = field("ddpm", choices=GaussianDiffusion.solvers)
    """Sampler: ddpm (Diffuser's ancestral sampling), ddim or dpmpp_2m."""
    sampling_steps: int = field(0, ge=0)
    """Denoising steps per plan; 0 = num_diffusion_steps (Diffuser: all 20)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.dims) >= 1, "dims", "must list at least one U-Net level.")
        check(len(self.value_dims) >= 1, "value_dims", "must list at least one level.")
        multiple = 2 ** (len(self.dims) - 1)
        check(
            self.horizon % multiple == 0,
            "horizon",
            f"must be a multiple of 2 ** (len(dims) - 1) = {multiple} for dims={self.dims}, got "
            f"{self.horizon}.",
        )
        check(
            self.replan_every <= self.horizon,
            "replan_every",
            f"must be in [1, horizon={self.horizon}], got {self.replan_every}.",
        )
        check(
            self.sampling_steps <= self.num_diffusion_steps,
            "sampling_steps",
            f"must be in [0, num_diffusion_steps={self.num_diffusion_steps}] (0 = all), got "
            f"{self.sampling_steps}.",
        )
        check(
            self.prediction != "eps" or 1 <= self.sampling_steps <= self.num_diffusion_steps // 2,
            "sampling_steps",
            "with prediction='eps' must be in [1, num_diffusion_steps // 2]: the grid's top level is "
            "then not the last cosine timestep (abar ~ 6e-6), where an epsilon model's clean "
            "prediction (x - sqrt(1 - abar) eps) / sqrt(abar) amplifies its error ~400x and "
            "sampling diverges. Or use prediction='x0' (Diffuser's) or 'v'.",
        )


# --------------------------------------------------------------------------------------- data
def discounted_returns(dataset: OfflineDataset, gamma: float, termination_penalty: float = 0.0) -> np.ndarray:
    """Per row t: ``sum_k gamma^k r'_{t+k}`` up to the end of t's episode, ``r' = r + penalty * term``
    (Diffuser's ``ValueDataset`` target). Vectorised over episodes, one pass per step from the end."""
    rewards = dataset.rewards.astype(np.float64) + termination_penalty * dataset.terminations.astype(
        np.float64
    )
    ends = np.asarray(dataset.episode_ends, dtype=np.int64)
    lengths = np.diff(ends, prepend=0)
    out = rewards.copy()
    for j in range(1, int(lengths.max(initial=0))):
        rows = ends[lengths > j] - 1 - j
        out[rows] += gamma * out[rows + 1]
    return out


class WindowBatch(NamedTuple):
    obs: torch.Tensor
    """(B, H, obs_dim) raw observations."""
    actions: torch.Tensor
    """(B, H, act_dim) raw actions."""
    is_pad: torch.Tensor
    """(B, H) bool: the step lies past its episode's end and repeats its last step."""
    returns: torch.Tensor
    """(B,) discounted return from the window's first step to its episode's end (J's target)."""


class ValueWindowSampler(TrajectorySampler):
    """``TrajectorySampler`` windows (padded tails allowed) plus the return-to-go of each window's start."""

    def __init__(self, ds, device, seed, horizon: int, gamma: float, termination_penalty: float) -> None:
        super().__init__(ds, device, seed, horizon=horizon, pad_tail=True)
        returns = discounted_returns(ds, gamma, termination_penalty)
        self.returns = torch.as_tensor(returns, dtype=torch.float32, device=self.device)

    def sample(self, batch_size: int) -> WindowBatch:
        k = self.randint(len(self.window_starts), batch_size)
        start = self.window_starts[k]
        idx, pad = window_indices(start, start, self.window_ends[k], self.offsets)
        return WindowBatch(self.obs[idx], self.actions[idx], pad, self.returns[start])


# ------------------------------------------------------------------------------------ networks
def _conv_block(c_in: int, c_out: int, kernel_size: int = 5) -> nn.Sequential:
    groups = next(g for g in range(min(8, c_out), 0, -1) if c_out % g == 0)
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2), nn.GroupNorm(groups, c_out), nn.Mish()
    )


class ValueNet(nn.Module):
    """J(tau): a convolutional encoder over the window, after Diffuser's ``ValueFunction`` without its
    time input (it sees clean windows): per level two Conv1d-GroupNorm-Mish blocks with a residual
    1x1 projection and a stride-2 convolution, then an MLP on the flattened features. ``(B, H, C) ->
    (B,)`` in standardised return units."""

    def __init__(self, horizon: int, channels: int, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        length, c_in = horizon, channels
        for d in dims:
            self.levels.append(
                nn.ModuleList(
                    [
                        _conv_block(c_in, d),
                        _conv_block(d, d),
                        nn.Conv1d(c_in, d, 1) if c_in != d else nn.Identity(),
                        nn.Conv1d(d, d, 3, stride=2, padding=1),
                    ]
                )
            )
            length, c_in = (length + 1) // 2, d
        flat = c_in * length
        self.head = nn.Sequential(nn.Linear(flat, flat // 2 or 1), nn.Mish())
        self.out = nn.Linear(flat // 2 or 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        for block1, block2, skip, down in self.levels:
            h = down(block2(block1(h)) + skip(h))
        return fp32_head(self.out, self.head(h.flatten(1))).squeeze(-1)


class Plan(NamedTuple):
    observations: torch.Tensor
    """(B, H, obs_dim) planned observations; the first is the given observation."""
    actions: torch.Tensor
    """(B, H, act_dim) planned actions, clipped to the action space."""
    values: torch.Tensor
    """(B,) J of each plan, in return units."""
    normalized: torch.Tensor
    """(B, H, obs_dim + act_dim) the plan as sampled (normalised [obs, action] per step)."""


# --------------------------------------------------------------------------------------- agent
class Diffuser(OfflineAgent):
    def __init__(
        self,
        config: DiffuserConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        c = config
        self.obs_dim, self.act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        channels = self.obs_dim + self.act_dim
        self.act_norm = Normalizer((self.act_dim,)).to(self.device)
        self.return_norm = Normalizer(()).to(self.device)
        self.diffusion = GaussianDiffusion(
            "unet",
            (c.horizon, channels),
            prediction=c.prediction,
            schedule=c.schedule,
            num_train_steps=c.num_diffusion_steps,
            cond_dim=self.obs_dim if c.condition_on_start else 0,
            default_steps=c.sampling_steps or c.num_diffusion_steps,
            net_kwargs={"dims": c.dims, "time_dim": c.time_dim},
        ).to(self.device)
        self.value = ValueNet(c.horizon, channels, c.value_dims).to(self.device)
        self.nets = nn.ModuleDict({"diffusion": self.diffusion, "value": self.value})
        self.ema = EMA(self.nets, decay=c.ema_decay)
        self.opt = self.adam(self.nets.parameters(), lr=c.learning_rate)
        self.parts |= {
            "act_norm": self.act_norm,
            "return_norm": self.return_norm,
            "nets": self.nets,
            "ema": self.ema,
            "opt": self.opt,
        }
        # Loss weights per (step, channel): 0 on the always-inpainted first state, action_weight on the
        # first (executed) action, 1 elsewhere; padded steps are zeroed per batch.
        weight = torch.ones(c.horizon, channels, device=self.device)
        weight[0, : self.obs_dim] = 0.0
        weight[0, self.obs_dim :] = c.action_weight
        self.loss_weight = weight
        self.start_mask = torch.zeros(1, c.horizon, channels, dtype=torch.bool, device=self.device)
        self.start_mask[:, 0, : self.obs_dim] = True
        self.low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        self.queue: ActionQueue | None = None  # (n_envs, replan_every, act_dim) planned actions
        self._loss = self.maybe_compile(self._loss)

    # ---------------------------------------------------------------------------- data
    def prepare(self, dataset: OfflineDataset) -> None:
        super().prepare(dataset)
        self.act_norm.fit(dataset.actions)
        self.return_norm.fit(discounted_returns(dataset, self.config.gamma, self.config.termination_penalty))
        self.ema.module.load_state_dict(self.nets.state_dict())  # plan with the fitted nets from step 0

    def make_sampler(self, dataset: OfflineDataset, device: torch.device, seed: int) -> ValueWindowSampler:
        c = self.config
        return ValueWindowSampler(dataset, device, seed, c.horizon, c.gamma, c.termination_penalty)

    def normalize(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Raw (..., obs_dim) and (..., act_dim) -> the model's (..., obs_dim + act_dim)."""
        return torch.cat([self.obs_norm(obs), self.act_norm(actions)], dim=-1)

    # ---------------------------------------------------------------------------- training
    def _loss(self, batch: WindowBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self.autocast():
            x = self.normalize(batch.obs, batch.actions)
            weight = self.loss_weight * (~batch.is_pad).unsqueeze(-1)
            diffusion_loss = self.diffusion.loss(x, self._start_cond(x), weight=weight)
            target = self.return_norm(batch.returns)
            value_loss = (self.value(x).float() - target).pow(2).mean()
        metrics = {"losses/diffusion": diffusion_loss.detach(), "losses/value": value_loss.detach()}
        return diffusion_loss + value_loss, metrics

    def _start_cond(self, x: torch.Tensor) -> torch.Tensor | None:
        """The denoiser's condition: the (normalised) first state of each window, or None."""
        return x[:, 0, : self.obs_dim] if self.config.condition_on_start else None

    def update(self, batch: WindowBatch) -> dict[str, torch.Tensor]:
        loss, metrics = self._loss(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.num_updates += 1
        if self.num_updates % self.config.ema_every == 0:
            self.ema.update()
        return metrics

    # ---------------------------------------------------------------------------- planning
    def values(self, plans: torch.Tensor) -> torch.Tensor:
        """J of normalised plans ``(B, H, C)`` in return units, with the planning (EMA) weights."""
        return self.return_norm.inverse(self.ema.module["value"](plans))

    @torch.no_grad()
    def plan(
        self,
        obs: torch.Tensor,
        planning: str | None = None,
        num_plans: int | None = None,
        guide_scale: float | None = None,
    ) -> Plan:
        """One plan per observation ``(B, obs_dim)``; ``planning``, ``num_plans`` and ``guide_scale``
        default to the config's."""
        c = self.config
        planning = planning or c.planning
        guide_scale = c.guide_scale if guide_scale is None else guide_scale
        if planning not in PLANNING:
            raise ConfigError(f"planning must be one of {', '.join(PLANNING)}, got {planning!r}.")
        obs = obs.to(self.device, torch.float32)
        b, n = obs.shape[0], (num_plans or c.num_plans) if planning in ("sorted", "both") else 1
        model, value = self.ema.module["diffusion"], self.ema.module["value"]
        start_n = self.obs_norm(obs)
        known = torch.zeros(b * n, c.horizon, self.obs_dim + self.act_dim, device=self.device)
        known[:, 0, : self.obs_dim] = start_n.repeat_interleave(n, dim=0)  # steer's candidate order
        guided = planning in ("guided", "both") and guide_scale > 0
        kwargs = {
            "inpaint": Inpaint(self.start_mask, known),
            "solver": c.solver,
            "guide": value if guided else None,
            "guide_scale": guide_scale if guided else 0.0,
        }
        cond = start_n if c.condition_on_start else None
        if n == 1:
            x = model.sample(b, cond, **kwargs)
        else:  # plan sorting: N candidates per observation, the one with the highest J kept
            scorer = lambda x, _: value(x)  # noqa: E731
            x = steer(model, scorer, num_candidates=n, cond=cond, batch_size=b, **kwargs).samples
        observations = self.obs_norm.inverse(x[..., : self.obs_dim])
        observations[:, 0] = obs  # the inpainted start, exact in raw units too
        actions = torch.maximum(
            torch.minimum(self.act_norm.inverse(x[..., self.obs_dim :]), self.high), self.low
        )
        return Plan(observations, actions, self.values(x), x)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """The next queued action per env, planning for the envs whose queue is empty. Plans are
        samples either way: ``deterministic`` changes nothing (sorting is already an argmax)."""
        n, k = obs.shape[0], self.config.replan_every
        if self.queue is None or self.queue.shape != (n, k):
            self.queue = ActionQueue(n, k, self.act_dim, self.device)
        need = self.queue.empty()
        if len(need):
            self.queue.fill(need, self.plan(obs[torch.as_tensor(need, device=self.device)]).actions[:, :k])
        return self.queue.pop()

    def reset_episodes(self, mask: np.ndarray) -> None:
        """Drop the queued actions of envs whose episode just started."""
        if self.queue is not None and len(self.queue) == len(mask):
            self.queue.clear(mask)


register_method(
    agent_method(
        "diffuser",
        "offline",
        DiffuserConfig,
        Diffuser,
        ("box",),
        "Diffuser: diffusion planner over state-action windows, value-guided and/or sorted plans",
    )
)
