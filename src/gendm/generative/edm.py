"""EDM (Karras et al. 2022): preconditioned denoiser, log-normal training noise, Euler and Heun samplers.

The network ``F`` is wrapped as ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise, cond)`` (Table 1:
``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
``c_in = 1 / sqrt(sigma^2 + sd^2)``, ``c_noise = ln(sigma) / 4``), trained at ``ln sigma ~ N(P_mean,
P_std^2)`` with weight ``(sigma^2 + sd^2) / (sigma sd)^2``. Sampling integrates the probability-flow
ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` over the sigma schedule of eq. 5 (``rho = 7``) down to 0:
``euler`` (first order) or ``heun`` (Alg. 1, second order except on the last step), deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gendm.core.errors import ConfigError
from gendm.generative.base import GenerativeModel


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """Eq. 5: ``steps`` noise levels from sigma_max to sigma_min, then 0."""
    if steps == 1:
        return [sigma_max, 0.0]
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return [*(inv**rho).tolist(), 0.0]


class EDM(GenerativeModel):
    """Args: ``sigma_data`` (the data's std; 0.5 in the paper for images in [-1, 1]), ``sigma_min``,
    ``sigma_max``, ``rho``, ``p_mean``, ``p_std``; the rest as ``GenerativeModel``."""

    objective = "edm"
    solvers = ("heun", "euler")

    def __init__(
        self,
        net: nn.Module | str,
        event_shape: Sequence[int],
        sigma_data: float = 0.5,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        **kwargs: Any,
    ) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}.")
        super().__init__(net, event_shape, **kwargs)
        self.sigma_data, self.sigma_min, self.sigma_max, self.rho = sigma_data, sigma_min, sigma_max, rho
        self.p_mean, self.p_std = p_mean, p_std

    def _precond(self, x: torch.Tensor, sigma: torch.Tensor, cond_in) -> torch.Tensor:
        """D(x, sigma) of Table 1; ``sigma`` is (B,)."""
        sd = self.sigma_data
        s = sigma.view(-1, *([1] * (x.dim() - 1)))
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        out = self._net(c_in * x, sigma.log() / 4, cond_in).float()
        return c_skip * x + c_out * out

    def loss(self, x, cond=None, weight=None):
        self._check_x(x)
        b = x.shape[0]
        sigma = (torch.randn(b, device=x.device) * self.p_std + self.p_mean).exp()
        s = sigma.view(-1, *([1] * (x.dim() - 1)))
        lam = (s**2 + self.sigma_data**2) / (s * self.sigma_data) ** 2
        denoised = self._precond(x + s * torch.randn_like(x), sigma, self._train_cond(cond, b))
        return self._weighted_mean(lam * (denoised - x) ** 2, weight)

    # ---- sampling hooks: a level is sigma ----
    def _grid(self, solver, steps):
        return karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho)

    def _prior(self, shape, generator):
        return self.sigma_max * torch.randn(shape, device=self._device, generator=generator)

    def _net_time(self, level, batch):
        return torch.full((batch,), math.log(level) / 4, device=self._device)

    def _net_input(self, x, level):
        return x / (float(level) ** 2 + self.sigma_data**2) ** 0.5

    def _x0(self, x, level, out):
        sd, s = self.sigma_data, float(level)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2) ** 0.5
        return c_skip * x + c_out * out

    def _noised(self, y, level, eps):
        return y + float(level) * eps

    def _guide_weight(self, level):
        return float(level) ** 2

    def _step(self, solver, i, grid, x, x0_hat, ctx):
        sigma, sigma_next = float(grid[i]), float(grid[i + 1])
        d = (x - x0_hat) / sigma
        x_next = x + (sigma_next - sigma) * d
        if solver == "heun" and sigma_next > 0:
            d_next = (x_next - ctx.denoise(x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma) * 0.5 * (d + d_next)
        return x_next, x0_hat
