"""Gaussian diffusion (Ho et al. 2020) with epsilon, x0 or v prediction; DDPM, DDIM and DPM-Solver++(2M).

Forward process: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` for ``t = 0..T-1``. Every solver
here is written in terms of the predicted clean sample ``x0_hat``, so all three prediction targets
support all three solvers:

- ``ddpm`` — ancestral sampling from the posterior q(x_prev | x_t, x0_hat) (DDPM eq. 6-7), over any
  subsequence of the training timesteps;
- ``ddim`` — DDIM (Song et al. 2021, eq. 12) with ``eta`` (0 = deterministic, 1 = DDPM's variance);
- ``dpmpp_2m`` — DPM-Solver++(2M), the multistep second-order data-prediction solver (Lu et al. 2022,
  Alg. 2) in half-log-SNR ``lambda = log(alpha / sigma)``, first order on the first and last steps.

The sampling grid is ``steps`` timesteps evenly spaced from ``T - T/steps`` down to ``0`` (DDIM's
"leading" spacing), followed by the clean level (abar = 1), so ``steps`` is the number of network
evaluations. Epsilon models start below the timesteps whose beta hit the 0.999 clip (there the clean
prediction is ill-posed), so with ``steps = T`` they take one evaluation fewer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gendm.core.errors import ConfigError
from gendm.generative.base import GenerativeModel

PREDICTIONS = ("eps", "x0", "v")
SCHEDULES = ("linear", "cosine", "vp")


def linear_alphas_cumprod(num_steps: int) -> torch.Tensor:
    """DDPM's linear betas (1e-4 to 0.02 at T=1000), rescaled so shorter chains reach the same noise."""
    scale = 1000.0 / num_steps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64).clamp(max=0.999)
    return torch.cumprod(1.0 - betas, dim=0)


def vp_alphas_cumprod(num_steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> torch.Tensor:
    """The variance-preserving SDE (Song et al. 2021, beta(t) = beta_min + t (beta_max - beta_min))
    discretised into ``num_steps`` steps: ``alpha_t = exp(-beta_min / T - (beta_max - beta_min)
    (2t - 1) / (2 T^2))``, t = 1..T, the schedule of Diffusion-QL and IDQL for their T = 5 chains
    (``vp_beta_schedule`` in both reference codes; abar_T = exp(-5.05) whatever T)."""
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)
    log_alpha = -beta_min / num_steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / num_steps**2
    return torch.exp(torch.cumsum(log_alpha, dim=0))


def cosine_alphas_cumprod(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021) eq. 17, betas clipped at 0.999."""
    t = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1.0 - betas, dim=0)


class GaussianDiffusion(GenerativeModel):
    """A discrete-time Gaussian diffusion model.

    Args:
        net: a denoiser ``net(x, t, cond)`` (t = timestep / T) or a kind for ``make_denoiser``.
        event_shape: the shape of one sample.
        prediction: what the network predicts: ``eps``, ``x0`` or ``v`` (Salimans & Ho 2022).
        schedule: ``linear``, ``cosine`` or ``vp`` (short chains: Diffusion-QL and IDQL use T = 5).
        num_train_steps: T.
        cond_dim, cond_drop, default_steps, clip_x0, net_kwargs: see ``GenerativeModel``.
    """

    solvers = ("ddim", "ddpm", "dpmpp_2m")

    def __init__(
        self,
        net: nn.Module | str,
        event_shape: Sequence[int],
        prediction: str = "eps",
        schedule: str = "cosine",
        num_train_steps: int = 100,
        **kwargs: Any,
    ) -> None:
        if prediction not in PREDICTIONS:
            raise ConfigError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}.")
        if schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}.")
        if num_train_steps < 2:
            raise ConfigError(f"num_train_steps must be >= 2, got {num_train_steps}.")
        super().__init__(net, event_shape, **kwargs)
        self.objective, self.schedule, self.num_train_steps = prediction, schedule, int(num_train_steps)
        make = {"linear": linear_alphas_cumprod, "cosine": cosine_alphas_cumprod, "vp": vp_alphas_cumprod}
        self.register_buffer("alphas_cumprod", make[schedule](num_train_steps).float(), persistent=False)

    # ---- training ----
    def loss(self, x, cond=None, weight=None):
        self._check_x(x)
        b = x.shape[0]
        t = torch.randint(0, self.num_train_steps, (b,), device=x.device)
        abar = self.alphas_cumprod[t].view(b, *([1] * (x.dim() - 1)))
        eps = torch.randn_like(x)
        x_t = abar.sqrt() * x + (1 - abar).sqrt() * eps
        out = self._net(x_t, t.float() / self.num_train_steps, self._train_cond(cond, b))
        target = {"eps": eps, "x0": x, "v": abar.sqrt() * eps - (1 - abar).sqrt() * x}[self.objective]
        return self._weighted_mean((out.float() - target) ** 2, weight)

    # ---- sampling hooks: a level is a timestep index, -1 is clean data ----
    def _grid(self, solver, steps):
        if steps > self.num_train_steps:
            raise ConfigError(
                f"steps={steps} exceeds the {self.num_train_steps} timesteps this model was trained with."
            )
        # "Leading" spacing (DDIM's, diffusers' default): T - T/steps, ..., 0. It skips the last training
        # timesteps, where abar ~ 0 makes an epsilon model's clean prediction (x - s eps) / a ill-posed.
        top = (
            self.num_train_steps * (1 - 1 / steps)
            if steps < self.num_train_steps
            else self.num_train_steps - 1
        )
        ts = torch.linspace(min(top, self._top_level()), 0, steps).round().long().tolist()
        return [*dict.fromkeys(ts), -1]

    def _top_level(self) -> int:
        """The highest timestep a sampler starts from. An epsilon model skips the top timesteps whose
        beta hit the cosine schedule's 0.999 clip: there abar drops 1000-fold in one step, so the
        clean prediction (x - s eps) / sqrt(abar) amplifies the network's error ~30x into the next
        level (seen as divergence with steps = T)."""
        if self.objective != "eps":
            return self.num_train_steps - 1
        abar = self.alphas_cumprod
        betas = 1 - abar[1:] / abar[:-1]
        ok = torch.nonzero(betas < 0.99).flatten()
        return int(ok[-1]) + 1 if len(ok) else self.num_train_steps - 1

    def _abar(self, level: int) -> torch.Tensor:
        return self.alphas_cumprod[level] if level >= 0 else self.alphas_cumprod.new_tensor(1.0)

    def _prior(self, shape, generator):
        return torch.randn(shape, device=self._device, generator=generator)

    def _net_time(self, level, batch):
        return torch.full((batch,), level / self.num_train_steps, device=self._device)

    def _x0(self, x, level, out):
        abar = self._abar(level)
        a, s = abar.sqrt(), (1 - abar).sqrt()
        if self.objective == "eps":
            return (x - s * out) / a
        if self.objective == "v":
            return a * x - s * out
        return out

    def _noised(self, y, level, eps):
        abar = self._abar(level)
        return abar.sqrt() * y + (1 - abar).sqrt() * eps

    def _guide_weight(self, level):
        return float(1 - self._abar(level))

    def _step(self, solver, i, grid, x, x0_hat, ctx):
        abar, abar_next = self._abar(grid[i]), self._abar(grid[i + 1])
        last = i == len(grid) - 2
        if solver == "dpmpp_2m":
            return self._dpmpp_2m(x, x0_hat, abar, abar_next, last, ctx.state), x0_hat
        eta = 1.0 if solver == "ddpm" else ctx.eta
        eps_hat = (x - abar.sqrt() * x0_hat) / (1 - abar).sqrt()
        # sigma_t(eta)^2 of DDIM eq. 16; eta = 1 is the DDPM posterior variance (DDPM eq. 7).
        var = eta**2 * (1 - abar_next) / (1 - abar) * (1 - abar / abar_next)
        x_next = abar_next.sqrt() * x0_hat + (1 - abar_next - var).clamp_min(0).sqrt() * eps_hat
        if eta > 0 and not last:
            x_next = x_next + var.sqrt() * ctx.noise()
        return x_next, x0_hat

    @staticmethod
    def _dpmpp_2m(x, x0_hat, abar, abar_next, last, state):
        if last:  # to the clean level, lambda = +inf: the update is x0_hat itself
            return x0_hat
        a, s = abar.sqrt(), (1 - abar).sqrt()
        a_n, s_n = abar_next.sqrt(), (1 - abar_next).sqrt()
        h = torch.log(a_n / s_n) - torch.log(a / s)
        d = x0_hat
        if "x0_prev" in state:
            r = state["h_prev"] / h
            d = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * state["x0_prev"]
        state["x0_prev"] = x0_hat
        state["h_prev"] = h.expand(x.shape[0]).reshape(x.shape[0], *([1] * (x.dim() - 1)))
        return (s_n / s) * x - a_n * torch.expm1(-h) * d
