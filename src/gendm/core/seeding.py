"""Seeding of every random source a run touches."""

from __future__ import annotations

import random

import numpy as np
import torch

MAX_SEED = 2**32 - 1  # NumPy's legacy seeding takes 0 .. 2**32 - 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
