"""Acting state shared by agents that plan several actions at once.

``ActionQueue`` holds, per sub-env, the actions of the last sampled chunk (Diffusion Policy) or plan
(Diffuser) still to be executed: the agent refills the sub-envs whose queue ran empty, in one batch,
then pops one action per sub-env. A new number of sub-envs (or a new horizon) is a new queue.
"""

from __future__ import annotations

import numpy as np
import torch


class ActionQueue:
    """``horizon`` queued actions for each of ``n`` sub-envs, all empty at first."""

    def __init__(self, n: int, horizon: int, action_dim: int, device: torch.device) -> None:
        self.horizon, self.device = horizon, torch.device(device)
        self.actions = torch.zeros(n, horizon, action_dim, device=self.device)
        self.next = np.full(n, horizon, dtype=np.int64)  # each sub-env's next index; horizon = empty

    @property
    def shape(self) -> tuple[int, int]:
        """``(sub-envs, horizon)``."""
        return len(self.next), self.horizon

    def __len__(self) -> int:
        return len(self.next)

    def left(self) -> np.ndarray:
        """Actions still queued per sub-env."""
        return self.horizon - self.next

    def empty(self) -> np.ndarray:
        """Indices of the sub-envs whose queue has no action left."""
        return np.flatnonzero(self.next >= self.horizon)

    def fill(self, rows: np.ndarray, actions: torch.Tensor) -> None:
        """Queue ``actions`` ``(len(rows), horizon, action_dim)`` for the sub-envs ``rows``."""
        self.actions[torch.as_tensor(rows, device=self.device)] = actions
        self.next[rows] = 0

    def pop(self) -> torch.Tensor:
        """The next action of every sub-env, ``(n, action_dim)``; call it with no queue empty."""
        rows = torch.arange(len(self.next), device=self.device)
        taken = self.actions[rows, torch.as_tensor(self.next, device=self.device)]
        self.next += 1
        return taken

    def clear(self, mask: np.ndarray) -> None:
        """Empty the queues where ``mask`` (the sub-envs whose episode just started)."""
        self.next[np.asarray(mask, dtype=bool)] = self.horizon
