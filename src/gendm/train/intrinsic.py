"""Online training with an intrinsic exploration reward (``gendm.rewards``), for any online agent.

:class:`IntrinsicTrainer` is the online loop with its *training* env wrapped by a function (usually
``lambda env: IntrinsicReward(env, source, coef)``); the agent, the evaluation env and the protocol
are untouched, so evaluation returns stay extrinsic. It also records the env step of the first
successful training episode (extrinsic return > 0, which is success in MiniGrid) for the
exploration benchmark.

The intrinsic-reward state (RND networks, annotator answers) is not checkpointed: a resumed run
starts it afresh. The wrapper's name is part of the run identity, so a checkpoint of another
reward is never resumed by mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from gendm.train.loop import TrainSettings
from gendm.train.online import OnlineTrainer


class IntrinsicTrainer(OnlineTrainer):
    def __init__(
        self,
        s: TrainSettings,
        wrap: Callable[[gym.vector.VectorEnv], gym.vector.VectorEnv] | None = None,
        name: str = "none",
    ) -> None:
        super().__init__(s)
        self.intrinsic_name = name
        if wrap is not None:
            self.env = wrap(self.env)
        self.first_success_step: int | None = None

    def _final_obs(self, next_obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
        before = len(self.episodes)
        real = super()._final_obs(next_obs, done, info)
        if self.first_success_step is None and any(r > 0 for r in self.episodes[before:]):
            self.first_success_step = self.env_steps + self.env.num_envs  # counted after this call
        return real

    def _extra_identity(self) -> dict[str, Any]:
        return {"intrinsic": self.intrinsic_name}

    def _extra_summary(self) -> dict[str, Any]:
        stats = self.env.stats() if hasattr(self.env, "stats") else {}
        return {
            "intrinsic": self.intrinsic_name,
            "first_success_step": self.first_success_step,
            "intrinsic_stats": stats,
        }
