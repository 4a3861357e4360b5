"""The ``sample`` operator: one sampling loop for every generative family.

A family (Gaussian diffusion, EDM, flow matching) describes itself by four small pieces:

- ``_grid(solver, steps)`` — the noise levels the solver visits, from pure noise to clean data;
- ``_x0(x, level, out)`` — the clean sample predicted from the network's raw output at a level;
- ``_step(solver, i, x, x0_hat, denoise, state, noise)`` — one solver update to the next level;
- ``_noised(y, level, eps)`` — known data ``y`` noised to a level (inpainting).

``GenerativeModel.sample`` then adds what every family shares: classifier-free guidance, inpainting
masks (the known entries are exact in the result), value/classifier guidance by the gradient of a
function of the predicted clean sample, a temperature on the noise, and a per-step ``callback`` that
may resample particles (the ``steer`` operator uses it). A model records its training objective and
refuses a solver that objective does not support.

Conditioning. A model with ``cond_dim > 0`` hands its network ``[cond * keep, keep]``: the condition
times a presence flag, then the flag. Training drops the condition with probability ``cond_drop``
(classifier-free guidance, Ho & Salimans 2022); sampling with ``guidance_scale = w`` combines the
conditional and unconditional outputs as ``out_u + w (out_c - out_u)`` in one batched call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gendm.core.errors import ConfigError, DataError, unknown_name

Callback = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]
"""``callback(i, x, x0_hat)`` once ``i >= 1`` solver steps are done (not after the last): ``x`` at that
level and its clean prediction; may return batch indices to resample the batch with (solver memory,
conditions and inpainting values follow)."""


@dataclass
class StepContext:
    """What a solver step may use besides the current sample and its clean prediction."""

    denoise: Callable[[torch.Tensor, Any], torch.Tensor]
    """``denoise(x, level) -> x0_hat`` (guidance and inpainting applied): for multi-evaluation solvers."""
    noise: Callable[[], torch.Tensor]
    """Fresh standard noise of the batch's shape, times the temperature."""
    state: dict[str, torch.Tensor]
    """Per-sample solver memory (batch-first tensors; resampled with the batch)."""
    eta: float = 0.0


@dataclass
class Inpaint:
    """Entries of the sample fixed to known values: ``mask`` is True where ``values`` hold.

    Both broadcast to the sample's shape ``(B, *event_shape)``; masked entries are exact in the result
    (e.g. the start state of a planned trajectory, or a goal). The other entries follow by replacement
    (the known entries are re-noised to each level, as in SDEdit / RePaint without its resampling loop;
    Diffuser instead writes the clean values in after every step). Either way the free entries
    under-weight the exact conditional somewhat (measured in tests/test_generative.py).
    """

    mask: torch.Tensor
    values: torch.Tensor

    def expand(self, shape: torch.Size, device: torch.device) -> Inpaint:
        try:
            mask = torch.broadcast_to(self.mask.to(device=device, dtype=torch.bool), shape)
            values = torch.broadcast_to(self.values.to(device=device, dtype=torch.float32), shape)
        except RuntimeError as e:
            raise DataError(
                f"Inpaint mask {tuple(self.mask.shape)} / values {tuple(self.values.shape)} do not broadcast "
                f"to the sample shape {tuple(shape)}: give them the shape (B, *event_shape) or a prefix "
                f"that broadcasts."
            ) from e
        return Inpaint(mask.clone(), values.clone())

    def apply(self, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, known, x)


class GenerativeModel(nn.Module):
    """Base of every family: learns p(x | c) for ``x`` of shape ``event_shape`` and samples from it.

    Subclasses set ``objective`` (what the network was trained to predict) and ``solvers`` (the
    solvers that objective supports; the first is the default).
    """

    objective: str
    solvers: tuple[str, ...]
    extra_cond_dims: int = 0
    """Inputs a family appends to the network's condition (the shortcut model's step size)."""

    def __init__(
        self,
        net: nn.Module | str,
        event_shape: Sequence[int],
        cond_dim: int = 0,
        cond_drop: float = 0.0,
        default_steps: int = 20,
        clip_x0: float | None = None,
        net_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= cond_drop < 1.0:
            raise ConfigError(f"cond_drop must be in [0, 1), got {cond_drop}.")
        if cond_drop > 0 and cond_dim == 0:
            raise ConfigError("cond_drop > 0 needs a condition: set cond_dim > 0.")
        self.event_shape = tuple(int(d) for d in event_shape)
        self.cond_dim, self.cond_drop = int(cond_dim), float(cond_drop)
        self.default_steps, self.clip_x0 = int(default_steps), clip_x0
        if isinstance(net, str):
            from gendm.generative.denoisers import make_denoiser

            net = make_denoiser(net, self.event_shape, self.net_cond_dim, **(net_kwargs or {}))
        self.net = net

    # ---- conditioning -------------------------------------------------------------------------
    @property
    def net_cond_dim(self) -> int:
        """The condition width the network sees: condition, presence flag, family extras."""
        return (self.cond_dim + 1 if self.cond_dim else 0) + self.extra_cond_dims

    def _cond_input(
        self, cond: torch.Tensor | None, batch: int, keep: torch.Tensor | None
    ) -> torch.Tensor | None:
        if not self.cond_dim:
            if cond is not None:
                raise DataError(
                    f"This model is unconditional (cond_dim=0) but got a condition {tuple(cond.shape)}."
                )
            return None
        if cond is None:  # unconditional query of a conditional model
            return torch.zeros(batch, self.cond_dim + 1, device=self._device)
        if cond.shape != (batch, self.cond_dim):
            raise DataError(f"cond must have shape ({batch}, {self.cond_dim}), got {tuple(cond.shape)}.")
        keep = torch.ones(batch, 1, device=cond.device) if keep is None else keep.view(batch, 1).float()
        return torch.cat([cond * keep, keep], dim=-1)

    def _train_cond(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        keep = None
        if cond is not None and self.cond_drop > 0:
            keep = (torch.rand(batch, device=cond.device) >= self.cond_drop).float()
        return self._cond_input(cond, batch, keep)

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_x(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.event_shape:
            raise DataError(f"Expected samples of shape (B, {self.event_shape}), got {tuple(x.shape)}.")

    def _net(self, x: torch.Tensor, t: torch.Tensor, cond_in: torch.Tensor | None) -> torch.Tensor:
        return self.net(x, t, cond_in)

    # ---- training -----------------------------------------------------------------------------
    def loss(
        self, x: torch.Tensor, cond: torch.Tensor | None = None, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The family's training loss on clean samples ``x`` (B, *event_shape), a scalar.

        ``weight`` (broadcastable to ``x``) weights the per-entry error, e.g. 0 on entries that are
        always inpainted at sampling time.
        """
        raise NotImplementedError

    @staticmethod
    def _weighted_mean(err: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        if weight is None:
            return err.mean()
        weight = torch.broadcast_to(weight, err.shape)
        return (err * weight).sum() / weight.sum().clamp_min(1e-8)

    # ---- family hooks -------------------------------------------------------------------------
    def _grid(self, solver: str, steps: int) -> list[Any]:
        raise NotImplementedError

    def _prior(self, shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def _x0(self, x: torch.Tensor, level: Any, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _net_time(self, level: Any, batch: int) -> torch.Tensor:
        raise NotImplementedError

    def _net_input(self, x: torch.Tensor, level: Any) -> torch.Tensor:
        """The network's input at ``level`` (EDM scales it by c_in; identity elsewhere)."""
        return x

    def _step(self, solver: str, i: int, grid: list, x: torch.Tensor, x0_hat: torch.Tensor, ctx: StepContext):
        """Move ``x`` from ``grid[i]`` to ``grid[i + 1]``; returns ``(x_next, x0_hat)``."""
        raise NotImplementedError

    def _noised(self, y: torch.Tensor, level: Any, eps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _guide_weight(self, level: Any) -> float:
        """Variance at ``level``: the step size of value guidance (Diffuser: mean + scale * Sigma * grad)."""
        raise NotImplementedError

    def check_solver(self, solver: str) -> None:
        if solver not in self.solvers:
            raise ConfigError(
                f"{type(self).__name__} trained with objective {self.objective!r} does not support solver "
                f"{solver!r}; it supports: {', '.join(self.solvers)}." + _family_hint(solver)
            )

    # ---- the sample operator ------------------------------------------------------------------
    def sample(
        self,
        num_samples: int | None = None,
        cond: torch.Tensor | None = None,
        *,
        solver: str | None = None,
        steps: int | None = None,
        guidance_scale: float = 1.0,
        inpaint: Inpaint | None = None,
        eta: float = 0.0,
        temperature: float = 1.0,
        guide: Callable[[torch.Tensor], torch.Tensor] | None = None,
        guide_scale: float = 0.0,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        grad: bool = False,
    ) -> torch.Tensor:
        """Draw samples ``(B, *event_shape)``.

        Args:
            num_samples: B; defaults to ``cond``'s batch (a single condition row is broadcast).
            cond: ``(B, cond_dim)`` condition (observation, goal), or None.
            solver: one of ``self.solvers`` (default: the first).
            steps: solver steps (network evaluations: Heun and midpoint take two per step).
            guidance_scale: classifier-free guidance weight w (1 = plain conditional, 0 = unconditional).
            inpaint: entries fixed to known values, exact in the result.
            eta: DDIM stochasticity (0 = deterministic, 1 = DDPM's posterior variance).
            temperature: scale of the initial and injected noise.
            guide: ``f(x0_hat) -> (B,)`` to climb by its gradient (value / classifier guidance).
            guide_scale: step size of that gradient, times the variance at the current level.
            generator: a ``torch.Generator`` for reproducible noise.
            callback: ``callback(i, x, x0_hat)`` after each step; returned indices resample the batch.
            grad: keep the autograd graph through the whole reverse chain, so a loss on the samples
                trains the network (Diffusion-QL's Q term); by default sampling runs under no_grad.
        """
        kwargs = dict(solver=solver, steps=steps, guidance_scale=guidance_scale, inpaint=inpaint, eta=eta)
        kwargs |= dict(temperature=temperature, guide=guide, guide_scale=guide_scale, generator=generator)
        with torch.set_grad_enabled(grad):
            return self._sample(num_samples, cond, callback=callback, **kwargs)

    def _sample(
        self,
        num_samples: int | None,
        cond: torch.Tensor | None,
        *,
        solver: str | None,
        steps: int | None,
        guidance_scale: float,
        inpaint: Inpaint | None,
        eta: float,
        temperature: float,
        guide: Callable[[torch.Tensor], torch.Tensor] | None,
        guide_scale: float,
        generator: torch.Generator | None,
        callback: Callback | None,
    ) -> torch.Tensor:
        solver = solver or self.solvers[0]
        self.check_solver(solver)
        steps = int(steps or self.default_steps)
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}.")
        device = self._device
        if cond is not None:
            cond = cond.to(device=device, dtype=torch.float32)
            if num_samples is not None and cond.shape[0] == 1 and num_samples > 1:
                cond = cond.expand(num_samples, -1)
            num_samples = cond.shape[0]
        if num_samples is None:
            raise ConfigError("sample() needs num_samples or a cond batch.")
        shape = torch.Size((num_samples, *self.event_shape))
        if inpaint is not None:
            inpaint = inpaint.expand(shape, device)

        def noise() -> torch.Tensor:
            return temperature * torch.randn(
                shape_now[0], *self.event_shape, device=device, generator=generator
            )

        grid = self._grid(solver, steps)
        shape_now = shape
        x = temperature * self._prior(shape, generator)
        if inpaint is not None:
            x = inpaint.apply(x, self._noised(inpaint.values, grid[0], noise()))
        state: dict[str, torch.Tensor] = {}

        def denoise(x_in: torch.Tensor, level: Any) -> torch.Tensor:  # reads the current cond/inpaint
            x0_hat = self._denoise(x_in, level, cond, guidance_scale)
            return x0_hat if inpaint is None else inpaint.apply(x0_hat, inpaint.values)

        for i in range(len(grid) - 1):
            x0_hat = denoise(x, grid[i])
            if callback is not None and i > 0:
                idx = callback(i, x, x0_hat)
                if idx is not None:
                    x, x0_hat, cond, inpaint, state = _reindex(idx, x, x0_hat, cond, inpaint, state)
                    shape_now = x.shape
            if guide is not None and guide_scale:
                x = x + guide_scale * self._guide_weight(grid[i]) * self._guide_grad(x, grid[i], cond, guide)
                x0_hat = denoise(x, grid[i])
            x, x0_hat = self._step(solver, i, grid, x, x0_hat, StepContext(denoise, noise, state, eta))
            if inpaint is not None:
                last = i == len(grid) - 2
                known = inpaint.values if last else self._noised(inpaint.values, grid[i + 1], noise())
                x = inpaint.apply(x, known)
        return x

    def _denoise(self, x: torch.Tensor, level: Any, cond: torch.Tensor | None, w: float) -> torch.Tensor:
        batch = x.shape[0]
        t = self._net_time(level, batch)
        if self.cond_dim and cond is not None and w != 1.0:
            both = torch.cat([self._cond_input(cond, batch, None), self._cond_input(None, batch, None)])
            x_in = self._net_input(x, level)
            out_c, out_u = self._net(
                torch.cat([x_in, x_in]), torch.cat([t, t]), self._extra(both, level, 2 * batch)
            ).chunk(2)
            out = out_u + w * (out_c - out_u)
        else:
            out = self._net(
                self._net_input(x, level), t, self._extra(self._cond_input(cond, batch, None), level, batch)
            )
        x0 = self._x0(x, level, out.float())
        return x0.clamp(-self.clip_x0, self.clip_x0) if self.clip_x0 is not None else x0

    def _extra(self, cond_in: torch.Tensor | None, level: Any, batch: int) -> torch.Tensor | None:
        """Append family-specific condition inputs (none by default)."""
        return cond_in

    def _guide_grad(self, x: torch.Tensor, level: Any, cond, guide) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            value = guide(self._denoise(x, level, cond, 1.0))
            (grad,) = torch.autograd.grad(value.sum(), x)
        return grad


def _reindex(idx: torch.Tensor, x, x0_hat, cond, inpaint, state):
    x, x0_hat = x[idx], x0_hat[idx]
    cond = None if cond is None else cond[idx]
    if inpaint is not None:
        inpaint = Inpaint(inpaint.mask[idx], inpaint.values[idx])
    state = {k: v[idx] for k, v in state.items()}
    return x, x0_hat, cond, inpaint, state


_FAMILY_OF_SOLVER = {
    "ddpm": "GaussianDiffusion",
    "ddim": "GaussianDiffusion",
    "dpmpp_2m": "GaussianDiffusion",
    "heun": "EDM",
    "euler": "EDM or FlowMatching",
    "midpoint": "FlowMatching",
    "shortcut": "FlowMatching(objective='shortcut')",
}


def _family_hint(solver: str) -> str:
    if solver in _FAMILY_OF_SOLVER:
        return f" {solver!r} belongs to {_FAMILY_OF_SOLVER[solver]}: train that family to use it."
    return str(unknown_name("solver", solver, _FAMILY_OF_SOLVER)).removeprefix(f"Unknown solver {solver!r}.")
