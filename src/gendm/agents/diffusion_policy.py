"""Diffusion Policy (Chi et al. 2023, "Diffusion Policy: Visuomotor Policy Learning via Action Diffusion").

The policy is a conditional generative model of an *action chunk*: given the last ``obs_horizon``
observations (To), it samples ``pred_horizon`` (Tp) actions that start at the oldest of them, and the
robot executes ``action_horizon`` (Ta) of them (from the current step on) before sampling again
(receding-horizon control, paper Sec. 3.1 and Fig. 3):

    chunk index   0 .. To-2 | To-1 .. To-2+Ta | .. Tp-1
                  past      | executed        | predicted, discarded

A generative model is the point: on demonstrations that go around an obstacle on either side,
p(chunk | observations) has two modes and a sample picks one, where Gaussian behaviour cloning
averages them into the obstacle (``gendm/TwoPathReach-v0``, ``bc``). Sampling whole chunks also keeps
the chosen mode for Ta steps (temporal action consistency, paper Sec. 4.2).

Training (one ``update``): draw sequences from ``SequenceSampler`` (To observations up to t, Tp actions
from t - To + 1; episode edges padded by repeating the first/last step as the reference does), scale
actions to [-1, 1] (``ActionScaler`` from the Box bounds, or the dataset's min/max when the Box is
unbounded), standardise observations with the dataset's mean/std and flatten the window into the
condition, then minimise the family's denoising loss on the chunk (``GenerativeModel.loss``). Chi et
al. and LeRobot train on padded chunks without masking (LeRobot ``do_mask_loss_for_padding=False``);
``mask_padding=True`` drops padded steps from the loss. An EMA of the weights is kept and used for
acting.

Families (``family``), all behind the one ``sample`` operator of ``gendm.generative``:

- ``diffusion``: ``GaussianDiffusion``, T=100 training steps, squared-cosine schedule, epsilon
  prediction, predicted clean chunk clipped to [-1, 1] (the reference's DDPMScheduler settings);
  evaluated with DDPM over all T steps by default (the paper's simulation setting and LeRobot's), or
  ``ddim`` / ``dpmpp_2m`` (10 steps by default; the paper's real-world runs use DDIM 10). On the
  two-path task the stochastic DDPM chain separates the modes far better than the deterministic
  solvers at 10 steps, which put some chunks between them (``benchmarks/multimodal.py``);
- ``flow``: rectified flow (``FlowMatching``), Euler, 10 steps by default;
- ``shortcut``: a shortcut model (Frans et al. 2024) that samples in 1-2 steps.

Denoisers (``denoiser``): ``unet``, the 1-D temporal U-Net over the chunk with FiLM conditioning on the
observation window (the paper's CNN-based model; Chi's low-dim configs use down_dims 256-512-1024 =
``width=256, depth=3``), or ``mlp``, a residual MLP over the flattened chunk (fast on a CPU).
Optimiser: AdamW, lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, 500 linear warm-up steps then
cosine decay over the run (the reference's ``train_diffusion_unet_lowdim_workspace.yaml``).

``act`` keeps, per sub-env, the observation window (filled with the first observation at an
episode start, as the sampler pads) and a queue of the chunk's remaining actions; a new chunk is
sampled with the EMA model when a sub-env's queue is empty. ``reset_episodes(mask)`` clears both for
the sub-envs whose episode starts. Acting samples in evaluation too, as the paper does: the
``deterministic`` flag is accepted for the agent contract and does not change anything; the noise
comes from the agent's own generator (``self.generator``, seeded from torch's global RNG at
construction, hence from the run's seed, and saved in checkpoints), so evaluations are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from gendm.agents.acting import ActionQueue
from gendm.agents.base import LR_SCHEDULES, OfflineAgent, OfflineConfig, agent_method
from gendm.core.config import check, field
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler
from gendm.data.samplers import SequenceBatch, SequenceSampler
from gendm.generative import EMA, FlowMatching, GaussianDiffusion, GenerativeModel
from gendm.generative.diffusion import PREDICTIONS, SCHEDULES

FAMILIES = ("diffusion", "flow", "shortcut")
SOLVERS = {
    "diffusion": ("ddpm", "ddim", "dpmpp_2m"),
    "flow": ("euler", "midpoint"),
    "shortcut": ("shortcut", "euler", "midpoint"),
}
"""Solvers each family supports; the first is the default."""
DEFAULT_STEPS = {"ddpm": 0, "ddim": 10, "dpmpp_2m": 10, "euler": 10, "midpoint": 5, "shortcut": 2}
"""Solver steps when ``sample_steps=0``; 0 = all T training steps (DDPM)."""
DENOISERS = ("unet", "mlp")


@dataclass
class DiffusionPolicyConfig(OfflineConfig):
    obs_horizon: int = field(2, ge=1)
    """To: observations the policy sees, the current one and To-1 before it (paper and LeRobot: 2)."""
    pred_horizon: int = 16
    """Tp: actions per sampled chunk, starting at the oldest observed step (paper and LeRobot: 16)."""
    action_horizon: int = field(8, ge=1)
    """Ta: actions executed before sampling a new chunk (paper and LeRobot: 8); To-1+Ta <= Tp."""
    family: str = field("diffusion", choices=FAMILIES)
    """Generative family: diffusion (DDPM-trained, the paper's), flow (rectified flow) or shortcut
    (a flow model that samples in 1-2 steps, Frans et al. 2024)."""
    prediction: str = field("eps", choices=PREDICTIONS)
    """diffusion only: what the network predicts, eps, v or x0 (paper and LeRobot: epsilon)."""
    num_train_steps: int = field(100, ge=2)
    """diffusion only: T, training noise levels (paper and LeRobot: 100)."""
    schedule: str = field("cosine", choices=SCHEDULES)
    """diffusion only: noise schedule, cosine (the reference's squaredcos_cap_v2), linear or vp."""
    clip_sample: bool = True
    """diffusion only: clip the predicted clean chunk to [-1, 1] while sampling (reference: True)."""
    solver: str = "auto"
    """Evaluation solver; auto = the family's first: diffusion ddpm (or ddim, dpmpp_2m), flow euler
    (or midpoint), shortcut shortcut (or euler, midpoint)."""
    sample_steps: int = field(0, ge=0)
    """Solver steps when acting (midpoint: two network evaluations per step); 0 = the solver's default:
    ddpm all num_train_steps (paper and LeRobot: 100), ddim and dpmpp_2m 10 (the paper's real-world
    DDIM setting), euler 10, midpoint 5, shortcut 2."""
    shortcut_max_steps: int = field(16, ge=2)
    """shortcut only: the smallest trained step is 1/shortcut_max_steps (a power of two; Frans et al.
    use 128 for images, a short action chunk needs fewer)."""
    denoiser: str = field("unet", choices=DENOISERS)
    """Network: unet (1-D temporal U-Net over the chunk, FiLM on the observation window; the paper's
    CNN model) or mlp (residual MLP over the flattened chunk; fast on a CPU)."""
    width: int = field(256, ge=1)
    """unet: channels of the top level, doubled at each level below (Chi's low-dim configs: 256);
    mlp: hidden width."""
    depth: int = field(3, ge=1)
    """unet: levels (Chi's low-dim configs: 3, i.e. 256-512-1024); Tp must be divisible by
    2^(depth-1). mlp: residual blocks."""
    learning_rate: float = field(1e-4, gt=0)
    """AdamW learning rate, betas (0.95, 0.999) (paper and LeRobot: 1e-4)."""
    weight_decay: float = 1e-6
    """AdamW weight decay (paper and LeRobot: 1e-6)."""
    lr_warmup_steps: int = field(500, ge=0)
    """Linear learning-rate warm-up in gradient steps (paper and LeRobot: 500)."""
    lr_schedule: str = field("cosine", choices=LR_SCHEDULES)
    """After the warm-up: cosine (decay to 0 over the run, as the paper and LeRobot) or constant."""
    ema_decay: float = field(0.999, ge=0, lt=1)
    """Decay of the weights' EMA used for acting, after a (1+n)/(10+n) warm-up. Chi et al. ramp it to
    0.9999 (power 0.75: about 0.998 after 5k steps); 0.999 suits runs of 10^3-10^5 steps."""
    mask_padding: bool = False
    """Leave padded chunk steps (beyond an episode's edge) out of the loss (LeRobot's
    do_mask_loss_for_padding; the reference trains on them: False)."""
    batch_size: int = 256
    """Sequences per gradient step (Chi's low-dim configs: 256)."""
    normalize_obs: bool = True
    """Standardise observations with the dataset's mean and std (the reference min-max scales them to
    [-1, 1]; either is fitted once on the dataset)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.obs_horizon - 1 + self.action_horizon <= self.pred_horizon,
            "pred_horizon",
            f"must be >= obs_horizon - 1 + action_horizon = {self.obs_horizon - 1 + self.action_horizon} "
            f"(the executed actions start at chunk index obs_horizon - 1), got {self.pred_horizon}.",
        )
        if self.denoiser == "unet":
            multiple = 2 ** (self.depth - 1)
            check(
                self.pred_horizon % multiple == 0,
                "pred_horizon",
                f"must be a multiple of 2^(depth-1) = {multiple} for the unet, got {self.pred_horizon}.",
            )
        allowed = SOLVERS[self.family]
        check(
            self.solver == "auto" or self.solver in allowed,
            "solver",
            f"family {self.family!r} supports {', '.join(allowed)} (or auto), got {self.solver!r}.",
        )
        if self.family == "diffusion":
            check(
                self.sample_steps <= self.num_train_steps,
                "sample_steps",
                f"must be <= num_train_steps ({self.num_train_steps}), got {self.sample_steps}.",
            )
        m = self.shortcut_max_steps
        check(m & (m - 1) == 0, "shortcut_max_steps", f"must be a power of two >= 2, got {m}.")
        if self.family == "shortcut" and self.eval_solver == "shortcut":
            s = self.eval_steps
            check(
                s <= m and s & (s - 1) == 0,
                "sample_steps",
                f"the shortcut solver takes a power of two <= shortcut_max_steps ({m}) steps, got {s}.",
            )

    @property
    def eval_solver(self) -> str:
        return SOLVERS[self.family][0] if self.solver == "auto" else self.solver

    @property
    def eval_steps(self) -> int:
        return self.sample_steps or DEFAULT_STEPS[self.eval_solver] or self.num_train_steps


def build_model(c: DiffusionPolicyConfig, action_dim: int, cond_dim: int) -> GenerativeModel:
    """The generative model of (Tp, action_dim) chunks given a flattened (To * obs_dim) window."""
    if c.denoiser == "unet":
        net_kwargs: dict[str, Any] = {"dims": tuple(c.width * 2**i for i in range(c.depth))}
    else:
        net_kwargs = {"hidden": c.width, "depth": c.depth}
    common = {
        "event_shape": (c.pred_horizon, action_dim),
        "cond_dim": cond_dim,
        "default_steps": c.eval_steps,
        "net_kwargs": net_kwargs,
    }
    if c.family == "diffusion":
        return GaussianDiffusion(
            c.denoiser,
            prediction=c.prediction,
            schedule=c.schedule,
            num_train_steps=c.num_train_steps,
            clip_x0=1.0 if c.clip_sample else None,
            **common,
        )
    return FlowMatching(c.denoiser, objective=c.family, max_steps=c.shortcut_max_steps, **common)


class DiffusionPolicy(OfflineAgent):
    def __init__(
        self,
        config: DiffusionPolicyConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        c = config
        self.obs_dim = int(np.prod(observation_space.shape))
        self.action_dim = int(action_space.shape[0])
        low, high = action_space.low, action_space.high
        self.fit_action_bounds = not (np.isfinite(low).all() and np.isfinite(high).all())
        if self.fit_action_bounds:  # placeholder; prepare() fits the dataset's min/max
            low, high = -np.ones(self.action_dim), np.ones(self.action_dim)
        self.action_scaler = ActionScaler(low, high).to(self.device)
        self.model = build_model(c, self.action_dim, c.obs_horizon * self.obs_dim).to(self.device)
        self.ema = EMA(self.model, c.ema_decay)
        fused = self.device.type in ("cpu", "cuda")
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=c.learning_rate,
            betas=(0.95, 0.999),
            weight_decay=c.weight_decay,
            fused=fused or None,
        )
        self.parts |= {
            "action_scaler": self.action_scaler,
            "model": self.model,
            "ema": self.ema,
            "opt": self.opt,
        }
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(int(torch.randint(0, 2**62, (1,))))
        self._loss = self.maybe_compile(self._loss)
        # Per sub-env acting state, allocated on the first act(): observation window, action queue.
        self._window: torch.Tensor | None = None  # (n, To, obs_dim), normalised
        self.queue: ActionQueue | None = None  # (n, Ta, action_dim) actions in [-1, 1]
        self._starts = np.zeros(0, dtype=bool)  # the next observation is an episode's first

    # ------------------------------------------------------------------------------------ data
    def prepare(self, dataset) -> None:
        super().prepare(dataset)
        if self.fit_action_bounds:
            low, high = dataset.actions.min(0), dataset.actions.max(0)
            fitted = ActionScaler(low, np.maximum(high, low + 1e-6))
            self.action_scaler.load_state_dict(fitted.state_dict())

    def make_sampler(self, dataset, device: torch.device, seed: int) -> SequenceSampler:
        c = self.config
        return SequenceSampler(dataset, device, seed, c.obs_horizon, c.pred_horizon)

    # -------------------------------------------------------------------------------- training
    def _lr(self) -> float:
        c, n = self.config, self.num_updates
        if n < c.lr_warmup_steps:
            return c.learning_rate * (n + 1) / c.lr_warmup_steps
        if c.lr_schedule == "constant" or not self.total_steps:
            return c.learning_rate
        return self.cosine_lr(c.learning_rate, warmup=c.lr_warmup_steps)

    def _loss(self, batch: SequenceBatch) -> torch.Tensor:
        with self.autocast():
            b = batch.obs.shape[0]
            cond = self.obs_norm(batch.obs).reshape(b, -1)
            chunk = self.action_scaler.scale(batch.actions).clamp(-1, 1)
            weight = (~batch.is_pad).unsqueeze(-1).float() if self.config.mask_padding else None
            return self.model.loss(chunk, cond, weight)

    def update(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        self.opt.param_groups[0]["lr"] = self._lr()
        loss = self._loss(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.ema.update()
        self.num_updates += 1
        return {"losses/denoise": loss.detach()}

    # ---------------------------------------------------------------------------------- acting
    @torch.no_grad()
    def sample_chunk(self, window: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Action chunks (B, Tp, action_dim) in [-1, 1] for normalised observation windows
        (B, To, obs_dim), sampled with the EMA model, the configured solver and steps."""
        c = self.config
        chunk = self.ema.module.sample(
            cond=window.reshape(window.shape[0], -1),
            solver=c.eval_solver,
            steps=c.eval_steps,
            generator=generator if generator is not None else self.generator,
        )
        return chunk.clamp(-1, 1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        c = self.config
        n = obs.shape[0]
        if self._window is None or self._window.shape[0] != n:
            self._window = torch.zeros(n, c.obs_horizon, self.obs_dim, device=self.device)
            self.queue = ActionQueue(n, c.action_horizon, self.action_dim, self.device)
            self._starts = np.ones(n, dtype=bool)
        latest = self.obs_norm(obs.to(self.device, torch.float32)).reshape(n, 1, self.obs_dim)
        starts = torch.as_tensor(self._starts, device=self.device).view(n, 1, 1)
        shifted = torch.cat([self._window[:, 1:], latest], dim=1)
        self._window = torch.where(starts, latest.expand_as(self._window), shifted)
        self._starts[:] = False
        empty = self.queue.empty()
        if len(empty):
            chunk = self.sample_chunk(self._window[torch.as_tensor(empty, device=self.device)])
            self.queue.fill(empty, chunk[:, c.obs_horizon - 1 : c.obs_horizon - 1 + c.action_horizon])
        return self.action_scaler.unscale(self.queue.pop())

    def reset_episodes(self, mask: np.ndarray) -> None:
        """Episodes start where ``mask``: forget their observation window and queued actions."""
        mask = np.asarray(mask, dtype=bool)
        if self.queue is None or len(self.queue) != len(mask):  # act() allocates for a new number
            self._window = None
            return
        self._starts |= mask
        self.queue.clear(mask)

    # ------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"sample_generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "sample_generator" in state:
            self.generator.set_state(state["sample_generator"].cpu())
        self._window = None  # acting state belongs to episodes, not to checkpoints


register_method(
    agent_method(
        "diffusion_policy",
        "offline",
        DiffusionPolicyConfig,
        DiffusionPolicy,
        ("box",),
        "Diffusion Policy: action chunks from a diffusion, flow or shortcut model (Chi et al. 2023)",
    )
)
