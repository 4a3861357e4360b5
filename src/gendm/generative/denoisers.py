"""Denoiser networks shared by diffusion, EDM and flow-matching models.

Every denoiser has one contract, ``forward(x, t, cond=None) -> Tensor`` shaped like ``x``:

- ``x``: ``(B, D)`` for :class:`ResidualMLPDenoiser` (any ``(B, *event)`` is flattened and restored),
  ``(B, T, C)`` (horizon, channels) for :class:`TemporalUNet1D` and :class:`TransformerDenoiser`;
- ``t``: ``(B,)`` float (or one shared scalar) noise level or time, roughly in ``[-2, 1]`` (diffusion
  passes ``t / T``, flow passes ``t``, EDM passes ``ln(sigma) / 4``); embedded by
  :class:`SinusoidalEmbedding`;
- ``cond``: ``(B, cond_dim)`` float, or ``None`` exactly when ``cond_dim == 0``.

What the output means (noise, clean sample, velocity) is decided by the model that owns the net.
Classifier-free guidance lives outside: the caller zeroes dropped conditions and appends a presence
flag, so ``cond_dim`` already counts it. Output layers are zero-initialised, so an untrained
denoiser predicts 0 (a safe start for every parameterisation) and runs in fp32 under autocast.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from gendm.core.errors import ConfigError, DataError
from gendm.core.registry import Registry
from gendm.nn.mlp import fp32_head

__all__ = [
    "DENOISERS",
    "ConditionEmbedding",
    "ResidualMLPDenoiser",
    "SinusoidalEmbedding",
    "TemporalUNet1D",
    "TransformerDenoiser",
    "count_parameters",
    "make_denoiser",
]


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _zero_(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _check_positive(owner: str, **fields: int) -> None:
    for name, value in fields.items():
        if int(value) < 1:
            raise ConfigError(f"{owner}: {name} must be a positive integer, got {value!r}.")


def _batch_t(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Accept a shared scalar (or ``(1,)``) time as well as ``(B,)``."""
    return t.reshape(1).expand(x.shape[0]) if t.numel() == 1 else t


def _check_cond(owner: str, cond_dim: int, x: torch.Tensor, cond: torch.Tensor | None) -> None:
    if cond_dim == 0:
        if cond is not None:
            raise DataError(f"{owner} was built with cond_dim=0 but got a condition; pass cond=None.")
        return
    if cond is None:
        raise DataError(f"{owner} was built with cond_dim={cond_dim} but got cond=None.")
    if cond.shape != (x.shape[0], cond_dim):
        raise DataError(
            f"{owner}: cond must have shape (batch, cond_dim) = ({x.shape[0]}, {cond_dim}), "
            f"got {tuple(cond.shape)}."
        )


class SinusoidalEmbedding(nn.Module):
    """Transformer positional encoding of a scalar ``t`` (Vaswani et al. 2017; DDPM, Ho et al. 2020).

    ``t`` is multiplied by ``scale`` first, so ``t`` in ``[0, 1]`` covers the same frequencies as the
    integer timesteps 0..1000 the encoding was designed for. ``(B,) -> (B, dim)``.
    """

    def __init__(self, dim: int, scale: float = 1000.0) -> None:
        super().__init__()
        _check_positive("SinusoidalEmbedding", dim=dim)
        self.dim, self.scale = dim, scale
        half = dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / max(half, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = (self.scale * t.float()).unsqueeze(-1) * self.freqs
        emb = torch.cat([args.sin(), args.cos()], dim=-1)
        if self.dim % 2:
            emb = nn.functional.pad(emb, (0, 1))
        return emb


class ConditionEmbedding(nn.Module):
    """``(t, cond) -> (B, out_dim)``: an MLP on the sinusoidal time features plus one on the condition.

    The two are summed (as DiT sums timestep and class embeddings); each block of a denoiser then
    projects this vector to what it needs (a bias, or FiLM scale and shift).
    """

    def __init__(self, time_dim: int, cond_dim: int, out_dim: int) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.time = nn.Sequential(
            SinusoidalEmbedding(time_dim),
            nn.Linear(time_dim, out_dim),
            nn.SiLU(),
            nn.Linear(out_dim, out_dim),
        )
        self.cond = (
            nn.Sequential(nn.Linear(cond_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
            if cond_dim > 0
            else None
        )

    def forward(self, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        emb = self.time(t)
        if self.cond is not None and cond is not None:
            emb = emb + self.cond(cond)
        return emb


# ---------------------------------------------------------------------------------------------------
# Residual MLP (SynthER)
# ---------------------------------------------------------------------------------------------------


class _ResidualBlock(nn.Module):
    """``h + W2 · drop(SiLU(W1 · LN(h) + E · emb))``."""

    def __init__(self, hidden: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1, self.fc2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_dim, hidden)
        self.act, self.drop = nn.SiLU(), nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.drop(self.act(self.fc1(self.norm(h)) + self.emb(emb))))


class ResidualMLPDenoiser(nn.Module):
    """Residual MLP denoiser for flat vectors, after SynthER (Lu et al. 2023, "Synthetic Experience
    Replay"): an input projection, ``depth`` pre-norm residual blocks (LayerNorm -> Linear -> SiLU ->
    Linear) with the time + condition embedding added inside each block, and a final LayerNorm ->
    SiLU -> Linear whose weights start at zero.

    ``x`` may be ``(B, dim)`` or ``(B, *event)`` with ``prod(event) == dim``; it is flattened and the
    output reshaped back, so trajectories ``(B, T, C)`` can use ``dim = T * C``.
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int = 0,
        hidden: int = 256,
        depth: int = 3,
        time_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_positive("ResidualMLPDenoiser", dim=dim, hidden=hidden, depth=depth, time_dim=time_dim)
        if cond_dim < 0:
            raise ConfigError(f"ResidualMLPDenoiser: cond_dim must be >= 0, got {cond_dim}.")
        self.dim, self.cond_dim = dim, cond_dim
        self.embed = ConditionEmbedding(time_dim, cond_dim, hidden)
        self.proj = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden, hidden, dropout) for _ in range(depth))
        self.final = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU())
        self.out = _zero_(nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if x[0].numel() != self.dim:
            raise DataError(
                f"ResidualMLPDenoiser(dim={self.dim}) got x of shape {tuple(x.shape)}; "
                f"expected (batch, {self.dim}) or (batch, *event) with {self.dim} elements per sample."
            )
        _check_cond("ResidualMLPDenoiser", self.cond_dim, x, cond)
        emb = self.embed(_batch_t(t, x), cond)
        h = self.proj(x.reshape(x.shape[0], self.dim))
        for block in self.blocks:
            h = block(h, emb)
        return fp32_head(self.out, self.final(h)).reshape(x.shape)


# ---------------------------------------------------------------------------------------------------
# Temporal U-Net (Diffuser / Diffusion Policy)
# ---------------------------------------------------------------------------------------------------


def _groups(channels: int, preferred: int = 8) -> int:
    """The largest group count <= ``preferred`` that divides ``channels``."""
    return next(g for g in range(min(preferred, channels), 0, -1) if channels % g == 0)


class _Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish, length-preserving."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int) -> None:
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(_groups(c_out), c_out),
            nn.Mish(),
        )


class _FiLMResidualBlock(nn.Module):
    """Two conv blocks with FiLM in between: ``h = (1 + scale) * h + shift``, scale and shift per channel
    from the embedding. Diffusion Policy uses ``scale * h + shift``; the ``1 +`` (as in the adaptive
    GroupNorm of Dhariwal & Nichol 2021) keeps an untrained block close to identity modulation."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = _Conv1dBlock(c_in, c_out, kernel_size)
        self.conv2 = _Conv1dBlock(c_out, c_out, kernel_size)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(emb_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb).unsqueeze(-1).chunk(2, dim=1)
        h = self.conv1(x) * (1 + scale) + shift
        return self.conv2(h) + self.skip(x)


def _valid_horizons(horizon: int, multiple: int) -> str:
    lower = (horizon // multiple) * multiple
    options = [v for v in (lower, lower + multiple) if v > 0]
    return " or ".join(str(v) for v in options)


class TemporalUNet1D(nn.Module):
    """1-D convolutional U-Net over the horizon, after Diffuser (Janner et al. 2022, "Planning with
    Diffusion for Flexible Behavior Synthesis") and Diffusion Policy's ``ConditionalUnet1D`` (Chi et
    al. 2023).

    Each level has two FiLM residual blocks (Conv1d + GroupNorm + Mish, per-channel scale and shift
    from the time + condition embedding); levels are joined by stride-2 convolutions going down and
    transposed convolutions coming up, with skip connections between matching levels. ``x`` is
    ``(B, T, C)`` and is transposed to ``(B, C, T)`` inside.

    The horizon must be divisible by ``2 ** (len(dims) - 1)`` (one halving per level below the top);
    other lengths raise :class:`~gendm.core.errors.ConfigError` naming the nearest valid ones rather
    than being padded, so the caller picks the horizon deliberately. ``horizon`` is optional and only
    validated early; the network itself accepts any valid length.
    """

    def __init__(
        self,
        channels: int,
        cond_dim: int = 0,
        horizon: int | None = None,
        dims: Sequence[int] = (64, 128, 256),
        time_dim: int = 64,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if not dims:
            raise ConfigError("TemporalUNet1D: dims must name at least one level, e.g. (64, 128, 256).")
        _check_positive("TemporalUNet1D", channels=channels, time_dim=time_dim, kernel_size=kernel_size)
        _check_positive("TemporalUNet1D", **{f"dims[{i}]": d for i, d in enumerate(dims)})
        if kernel_size % 2 == 0:
            raise ConfigError(
                f"TemporalUNet1D: kernel_size must be odd to keep the length, got {kernel_size}."
            )
        if cond_dim < 0:
            raise ConfigError(f"TemporalUNet1D: cond_dim must be >= 0, got {cond_dim}.")
        self.channels, self.cond_dim, self.dims = channels, cond_dim, dims
        self.multiple = 2 ** (len(dims) - 1)
        if horizon is not None:
            self._check_horizon(horizon)
        self.horizon = horizon

        emb_dim = 4 * time_dim  # the time-MLP width of Diffuser and DDPM
        self.embed = ConditionEmbedding(time_dim, cond_dim, emb_dim)
        levels = list(zip((channels, *dims[:-1]), dims))
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        _FiLMResidualBlock(c_in, c_out, emb_dim, kernel_size),
                        _FiLMResidualBlock(c_out, c_out, emb_dim, kernel_size),
                        nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1),
                    ]
                )
            )
        self.mid = nn.ModuleList(
            _FiLMResidualBlock(dims[-1], dims[-1], emb_dim, kernel_size) for _ in range(2)
        )
        self.up = nn.ModuleList()
        for c_in, c_out in reversed(levels[1:]):
            self.up.append(
                nn.ModuleList(
                    [
                        _FiLMResidualBlock(2 * c_out, c_in, emb_dim, kernel_size),
                        _FiLMResidualBlock(c_in, c_in, emb_dim, kernel_size),
                        nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
                    ]
                )
            )
        self.final = _Conv1dBlock(dims[0], dims[0], kernel_size)
        self.out = _zero_(nn.Conv1d(dims[0], channels, 1))

    def _check_horizon(self, horizon: int) -> None:
        if horizon < 1 or horizon % self.multiple:
            raise ConfigError(
                f"TemporalUNet1D: horizon {horizon} is not a positive multiple of {self.multiple} "
                f"(= 2 ** (len(dims) - 1) for dims={self.dims}); use horizon "
                f"{_valid_horizons(horizon, self.multiple)}, or fewer levels in dims."
            )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.channels:
            raise DataError(
                f"TemporalUNet1D(channels={self.channels}) expects x of shape (batch, horizon, "
                f"{self.channels}), got {tuple(x.shape)}."
            )
        self._check_horizon(x.shape[1])
        _check_cond("TemporalUNet1D", self.cond_dim, x, cond)
        emb = self.embed(_batch_t(t, x), cond)
        h = x.transpose(1, 2)
        skips = []
        for block1, block2, downsample in self.down:
            h = block2(block1(h, emb), emb)
            skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = block(h, emb)
        # As in Diffuser and Diffusion Policy, the upsampled path ends at the top level without
        # concatenating that level's features again: skips[0] is left unused.
        for block1, block2, upsample in self.up:
            h = block2(block1(torch.cat([h, skips.pop()], dim=1), emb), emb)
            h = upsample(h)
        return fp32_head(self.out, self.final(h)).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------------


class TransformerDenoiser(nn.Module):
    """Small encoder-only transformer over the horizon, a simplification of Diffusion Policy's
    transformer denoiser (Chi et al. 2023) in the token-prefix style of U-ViT (Bao et al. 2023).

    Tokens: one time token, one condition token when ``cond_dim > 0``, then one token per horizon
    step (a linear projection of its ``C`` channels); a learned positional embedding is added to all
    of them. Pre-norm ``nn.TransformerEncoder`` layers (``batch_first=True``, ``norm_first=True``,
    GELU, feed-forward ``4 * d_model``) attend bidirectionally; the horizon tokens are read out
    through a final LayerNorm and a zero-initialised linear layer. The positional embedding fixes the
    horizon, so ``horizon`` is required and ``x`` must match it.
    """

    def __init__(
        self,
        channels: int,
        cond_dim: int = 0,
        *,
        horizon: int,
        d_model: int = 128,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
        time_dim: int = 64,
    ) -> None:
        super().__init__()
        _check_positive(
            "TransformerDenoiser",
            channels=channels,
            horizon=horizon,
            d_model=d_model,
            depth=depth,
            heads=heads,
            time_dim=time_dim,
        )
        if d_model % heads:
            raise ConfigError(f"TransformerDenoiser: d_model {d_model} must be divisible by heads {heads}.")
        if cond_dim < 0:
            raise ConfigError(f"TransformerDenoiser: cond_dim must be >= 0, got {cond_dim}.")
        self.channels, self.cond_dim, self.horizon = channels, cond_dim, horizon
        self.prefix = 1 + (cond_dim > 0)
        self.time = nn.Sequential(
            SinusoidalEmbedding(time_dim),
            nn.Linear(time_dim, d_model),
            nn.SiLU(),
            nn.Linear(d_model, d_model),
        )
        self.cond = nn.Linear(cond_dim, d_model) if cond_dim > 0 else None
        self.proj = nn.Linear(channels, d_model)
        self.pos = nn.Parameter(torch.randn(1, self.prefix + horizon, d_model) * 0.02)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model,
            heads,
            4 * d_model,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # enable_nested_tensor only helps with padding masks, which we never use, and warns under norm_first.
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out = _zero_(nn.Linear(d_model, channels))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.horizon, self.channels):
            raise DataError(
                f"TransformerDenoiser(horizon={self.horizon}, channels={self.channels}) expects x of "
                f"shape (batch, {self.horizon}, {self.channels}), got {tuple(x.shape)}."
            )
        _check_cond("TransformerDenoiser", self.cond_dim, x, cond)
        tokens = [self.time(_batch_t(t, x)).unsqueeze(1)]
        if self.cond is not None:
            tokens.append(self.cond(cond).unsqueeze(1))
        tokens.append(self.proj(x))
        h = self.encoder(self.drop(torch.cat(tokens, dim=1) + self.pos))
        return fp32_head(self.out, self.norm(h[:, self.prefix :]))


# ---------------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------------


def _mlp(event_shape: tuple[int, ...], cond_dim: int, **kwargs) -> nn.Module:
    return ResidualMLPDenoiser(math.prod(event_shape), cond_dim, **kwargs)


def _temporal(cls: type[nn.Module], kind: str) -> Callable[..., nn.Module]:
    def build(event_shape: tuple[int, ...], cond_dim: int, **kwargs) -> nn.Module:
        if len(event_shape) != 2:
            raise ConfigError(
                f"Denoiser {kind!r} needs event_shape (horizon, channels), got {event_shape}; "
                "use kind='mlp' for flat vectors."
            )
        horizon, channels = event_shape
        return cls(channels, cond_dim, horizon=horizon, **kwargs)

    build.cls = cls  # type: ignore[attr-defined]
    return build


_mlp.cls = ResidualMLPDenoiser  # type: ignore[attr-defined]

DENOISERS: Registry[Callable[..., nn.Module]] = Registry("denoiser", hint="See gendm.generative.denoisers.")
DENOISERS.register("mlp", _mlp)
DENOISERS.register("unet", _temporal(TemporalUNet1D, "unet"))
DENOISERS.register("transformer", _temporal(TransformerDenoiser, "transformer"))


def make_denoiser(kind: str, event_shape: Sequence[int], cond_dim: int = 0, **kwargs) -> nn.Module:
    """Build a denoiser for samples of shape ``event_shape`` conditioned on ``cond_dim`` features.

    ``kind``: ``"mlp"`` (:class:`ResidualMLPDenoiser`; ``(D,)``, or ``(T, C)`` flattened),
    ``"unet"`` (:class:`TemporalUNet1D`) or ``"transformer"`` (:class:`TransformerDenoiser`), the
    last two needing ``(T, C)``. ``kwargs`` go to the class (e.g. ``hidden``, ``dims``, ``d_model``).
    """
    build = DENOISERS.get(kind)
    event_shape = tuple(int(s) for s in event_shape)
    if not event_shape or any(s < 1 for s in event_shape):
        raise ConfigError(
            f"Denoiser {kind!r}: event_shape must be non-empty and positive, got {event_shape}."
        )
    allowed = set(inspect.signature(build.cls).parameters) - {"dim", "channels", "cond_dim", "horizon"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(
            f"Denoiser {kind!r} got unknown option(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}."
        )
    return build(event_shape, cond_dim, **kwargs)
