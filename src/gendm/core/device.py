"""Device resolution: CPU is the default, CUDA when asked for (or 'auto' and present)."""

from __future__ import annotations

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
