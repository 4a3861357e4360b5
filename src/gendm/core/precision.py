"""Which floating-point precision an update runs in, decided in one place.

``fp32`` is always correct. ``bf16`` runs hidden layers in bfloat16 and pays off only where the
device computes bfloat16 natively: CUDA GPUs with bf16 support, and x86 CPUs with AVX512-BF16 or AMX.
Elsewhere (an AVX2-only CPU, say) bf16 is emulated, slower than fp32, and oneDNN's fused bf16 kernels
refuse to run. So:

- ``native_bf16(device)`` is the one capability check. Every CPU-feature-specific kernel asks it
  first (``gendm.nn.fused``), and tests force it off, or on where the hardware has it, with
  ``force_native_bf16`` to exercise both paths on any machine.
- ``resolve_precision("auto", device)`` is ``"bf16"`` where native, else ``"fp32"``; an explicit
  ``"bf16"`` without native support still runs (on portable kernels) and warns once that fp32 is
  faster there.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

from gendm.core.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "auto")
Resolved = Literal["fp32", "bf16"]

_forced: bool | None = None
_warned: set[str] = set()


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which its native bf16 kernels are unavailable
_ONEDNN_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX on this x86 CPU, as torch's own CPU feature probe reports them, and not
    hidden from oneDNN by an ISA cap (``ONEDNN_MAX_CPU_ISA=AVX2`` makes a CPU behave as AVX2-only)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    if cap in _ONEDNN_CAPS_WITHOUT_BF16:
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def hardware_native_bf16(device: torch.device | str) -> bool:
    """What the hardware offers, ignoring ``force_native_bf16``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return _cpu_has_native_bf16()
    return False


def native_bf16(device: torch.device | str) -> bool:
    """True where ``device`` computes bfloat16 natively (the check every bf16 fast path consults)."""
    if _forced is not None:
        return _forced
    return hardware_native_bf16(device)


@contextmanager
def force_native_bf16(value: bool | None) -> Iterator[None]:
    """Within the block, ``native_bf16`` answers ``value`` (None: the hardware's answer). Forcing it
    on is refused where the CPU lacks native bf16, since the native kernels would then fail."""
    global _forced
    if value and not _cpu_has_native_bf16():
        raise ConfigError(
            "force_native_bf16(True): this CPU has no native bfloat16 (AVX512-BF16 or AMX), so the "
            "native kernels cannot run here; force it off, or leave it None."
        )
    previous, _forced = _forced, value
    try:
        yield
    finally:
        _forced = previous


def resolve_precision(precision: str, device: torch.device | str) -> Resolved:
    """``"auto"`` -> ``"bf16"`` where ``device`` computes it natively, else ``"fp32"``. An explicit
    ``"bf16"`` stays bf16 (correct everywhere) but warns once per device type where it is emulated."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    device = torch.device(device)
    native = native_bf16(device)
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "bf16" and not native and device.type not in _warned:
        _warned.add(device.type)
        warnings.warn(
            f"precision='bf16' on {device.type}: this device has no native bfloat16 (on a CPU: no "
            "AVX512-BF16 or AMX), so bf16 is emulated and slower than fp32 here; use precision='auto' "
            "or 'fp32'.",
            RuntimeWarning,
            stacklevel=2,
        )
    return precision  # type: ignore[return-value]
