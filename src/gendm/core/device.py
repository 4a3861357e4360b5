"""Device resolution (CPU is the default, CUDA when asked for or 'auto' and present) and the CPU
floating-point mode the training loops run under."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from gendm.core.errors import ConfigError


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was requested but torch sees no CUDA device; use --device cpu.")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ConfigError(
            f"device={device!r} is not a valid torch device (use cpu, cuda or auto): {e}"
        ) from e


@contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """Treat subnormal floats as zero on this thread's CPU while the block runs, then turn it off.

    Adam's second-moment estimates of rarely-used weights decay into the subnormal range
    (< 1.2e-38) within a few thousand updates; x86 arithmetic on subnormals takes a slow microcode
    path, which made the fused Adam step of SAC and IQL runs 4-5x slower (BENCHMARKS.md section 3);
    with the flag, the measured runs ended with the same returns to every digit. No effect where the
    CPU lacks the flag or ``enabled`` is False.
    """
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
