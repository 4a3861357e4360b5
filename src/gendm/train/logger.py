"""Metrics to a JSONL file and TensorBoard; CleanRL-style names (``charts/...``, ``losses/...``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricLogger:
    """``step_key`` names the x-axis in each JSONL row: ``env_steps`` (online) or ``grad_steps`` (offline)."""

    def __init__(self, out_dir: Path, tensorboard: bool = True, step_key: str = "env_steps") -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.step_key = step_key
        self._jsonl = open(out_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 (closed in close())
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tb"))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps({self.step_key: step, **metrics}) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
