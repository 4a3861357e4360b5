"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023) and one-step shortcut models.

Convention: ``t = 0`` is noise, ``t = 1`` is data; ``x_t = (1 - t) x_noise + t x_data`` and the network
predicts the velocity ``x_data - x_noise``. Solvers: ``euler`` and ``midpoint`` (second order, two
evaluations per step) over a uniform grid.

``objective="shortcut"`` trains a shortcut model (Frans et al. 2024, "One Step Diffusion via Shortcut
Models"): the network also sees the step size ``d`` and learns, besides the flow-matching target at the
smallest step ``1 / max_steps``, the self-consistency target ``s(x_t, t, 2d) = (s(x_t, t, d) +
s(x_{t+d}, t + d, d)) / 2`` on a ``shortcut_fraction`` of each batch. Its ``shortcut`` solver takes
``steps`` (a power of two up to ``max_steps``) jumps of size ``1 / steps`` — one step for the lowest
latency. This is gendm's few-step option for control.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gendm.core.errors import ConfigError
from gendm.generative.base import GenerativeModel

OBJECTIVES = ("flow", "shortcut")


class FlowMatching(GenerativeModel):
    """Args: ``objective`` (``flow`` or ``shortcut``), ``time_sampling`` (``uniform`` or ``logit_normal``,
    Esser et al. 2024), ``max_steps`` and ``shortcut_fraction`` (shortcut only); the rest as
    ``GenerativeModel``."""

    def __init__(
        self,
        net: nn.Module | str,
        event_shape: Sequence[int],
        objective: str = "flow",
        time_sampling: str = "uniform",
        max_steps: int = 64,
        shortcut_fraction: float = 0.25,
        **kwargs: Any,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}.")
        if time_sampling not in ("uniform", "logit_normal"):
            raise ConfigError(f"time_sampling must be 'uniform' or 'logit_normal', got {time_sampling!r}.")
        if objective == "shortcut" and (max_steps < 2 or max_steps & (max_steps - 1)):
            raise ConfigError(f"max_steps must be a power of two >= 2 for shortcut models, got {max_steps}.")
        self.objective = objective
        self.extra_cond_dims = 1 if objective == "shortcut" else 0
        super().__init__(net, event_shape, **kwargs)
        self.solvers = ("shortcut", "euler", "midpoint") if objective == "shortcut" else ("euler", "midpoint")
        self.time_sampling, self.max_steps, self.shortcut_fraction = (
            time_sampling,
            max_steps,
            shortcut_fraction,
        )

    # ---- step-size input of shortcut models ----
    def _d_feature(self, d: torch.Tensor) -> torch.Tensor:
        """log2(max_steps * d) / log2(max_steps): 0 at the smallest step, 1 at one step of size 1."""
        return (torch.log2(d * self.max_steps) / math.log2(self.max_steps)).view(-1, 1)

    def _with_d(self, cond_in: torch.Tensor | None, d: torch.Tensor) -> torch.Tensor | None:
        if self.objective != "shortcut":
            return cond_in
        feat = self._d_feature(d)
        return feat if cond_in is None else torch.cat([cond_in, feat], dim=-1)

    def _velocity(self, x, t, cond_in, d) -> torch.Tensor:
        return self._net(x, t, self._with_d(cond_in, d)).float()

    # ---- training ----
    def _sample_t(self, b: int, device) -> torch.Tensor:
        if self.time_sampling == "logit_normal":
            return torch.sigmoid(torch.randn(b, device=device))
        return torch.rand(b, device=device)

    def loss(self, x, cond=None, weight=None):
        self._check_x(x)
        b, device = x.shape[0], x.device
        view = (b, *([1] * (x.dim() - 1)))
        cond_in = self._train_cond(cond, b)
        noise = torch.randn_like(x)
        if self.objective == "flow":
            t = self._sample_t(b, device)
            x_t = (1 - t.view(view)) * noise + t.view(view) * x
            return self._weighted_mean((self._velocity(x_t, t, cond_in, t) - (x - noise)) ** 2, weight)
        # Shortcut: a fraction of the batch learns self-consistency at step 2d, the rest flow matching at
        # the smallest step. t lies on the grid of the step size so that t + 2d <= 1.
        n_sc = max(1, int(b * self.shortcut_fraction))
        levels = int(math.log2(self.max_steps))
        k = torch.randint(0, levels, (b,), device=device)  # 2d = 2^-k, d = 2^-(k+1)
        d = torch.where(torch.arange(b, device=device) < n_sc, 0.5 ** (k + 1), 1.0 / self.max_steps)
        step = torch.where(torch.arange(b, device=device) < n_sc, 2 * d, d)
        t = torch.floor(self._sample_t(b, device) / step) * step  # multiple of the step, < 1
        x_t = (1 - t.view(view)) * noise + t.view(view) * x
        target = x - noise
        with torch.no_grad():
            sc = slice(0, n_sc)
            c_sc = None if cond_in is None else cond_in[sc]
            s1 = self._velocity(x_t[sc], t[sc], c_sc, d[sc])
            x_mid = x_t[sc] + d[sc].view(-1, *view[1:]) * s1
            s2 = self._velocity(x_mid, t[sc] + d[sc], c_sc, d[sc])
            target = torch.cat([(s1 + s2) / 2, target[n_sc:]])
        pred = self._velocity(x_t, t, cond_in, step)
        return self._weighted_mean((pred - target) ** 2, weight)

    # ---- sampling hooks: a level is t in [0, 1] ----
    def _grid(self, solver, steps):
        if solver == "shortcut" and (steps > self.max_steps or steps & (steps - 1)):
            raise ConfigError(f"shortcut steps must be a power of two <= {self.max_steps}, got {steps}.")
        return torch.linspace(0, 1, steps + 1, dtype=torch.float64).tolist()

    def _prior(self, shape, generator):
        return torch.randn(shape, device=self._device, generator=generator)

    def _net_time(self, level, batch):
        return torch.full((batch,), float(level), device=self._device)

    def _extra(self, cond_in, level, batch):
        if self.objective != "shortcut":
            return cond_in
        return self._with_d(cond_in, torch.full((batch,), self._sample_d, device=self._device))

    def _x0(self, x, level, out):
        return x + (1 - float(level)) * out

    def _noised(self, y, level, eps):
        return float(level) * y + (1 - float(level)) * eps

    def _guide_weight(self, level):
        return (1 - float(level)) ** 2

    def sample(self, *args, **kwargs):
        solver = kwargs.get("solver") or self.solvers[0]
        steps = int(kwargs.get("steps") or self.default_steps)
        # Euler and midpoint on a shortcut model use the smallest trained step size's velocity.
        self._sample_d = 1.0 / steps if solver == "shortcut" else 1.0 / self.max_steps
        return super().sample(*args, **kwargs)

    def _step(self, solver, i, grid, x, x0_hat, ctx):
        t, t_next = float(grid[i]), float(grid[i + 1])
        dt = t_next - t
        v = (x0_hat - x) / (1 - t)  # the velocity, recovered from the clean prediction
        if solver == "midpoint":
            x_mid = x + 0.5 * dt * v
            t_mid = t + 0.5 * dt
            v = (ctx.denoise(x_mid, t_mid) - x_mid) / (1 - t_mid)
        return x + dt * v, x0_hat
