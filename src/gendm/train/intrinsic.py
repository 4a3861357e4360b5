"""Online training with an intrinsic exploration reward (``gendm.rewards``), for any online agent.

:class:`IntrinsicTrainer` is the online loop with its *training* env wrapped by a function (by default
the one ``TrainSettings.intrinsic`` names, see ``gendm.rewards.factory``); the agent, the evaluation
env and the protocol are untouched, so evaluation returns stay extrinsic. It also records the env step
of the first successful training episode (extrinsic return > 0, which is success in MiniGrid) for the
exploration benchmark.

Language-model faults never stop training: an unreachable server, timeouts or unreadable answers
leave the affected captions unrewarded, and the run's summary says so (``warnings``, and the
annotator's counts in ``intrinsic_stats``).

The intrinsic-reward state (RND networks, annotator answers) is not checkpointed: a resumed run
starts it afresh (a persistent response cache, ``cache=PATH``, keeps the answers). The reward's
settings are part of the run identity, so a checkpoint of another reward is never resumed by mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from gendm.train.online import OnlineTrainer
from gendm.train.trainer import TrainSettings


class IntrinsicTrainer(OnlineTrainer):
    def __init__(
        self,
        s: TrainSettings,
        wrap: Callable[[gym.vector.VectorEnv], gym.vector.VectorEnv] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(s)
        if wrap is None and s.intrinsic is not None:
            from gendm.rewards.factory import intrinsic_wrapper, parse_intrinsic

            settings = parse_intrinsic(s.intrinsic)
            wrap, name = intrinsic_wrapper(settings, s.seed), name or settings.kind
            self.intrinsic_identity: Any = settings.to_dict()
        else:
            self.intrinsic_identity = name or "none"
        self.intrinsic_name = name or "none"
        if wrap is not None:
            self.env = wrap(self.env)
        self.first_success_step: int | None = None

    @property
    def _annotator(self) -> Any:
        return getattr(getattr(self.env, "source", None), "annotator", None)

    def run(self) -> dict[str, Any]:
        try:
            return super().run()
        finally:
            if self._annotator is not None:
                self._annotator.close()

    def _final_obs(self, next_obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
        before = len(self.episodes)
        real = super()._final_obs(next_obs, done, info)
        if self.first_success_step is None and any(r > 0 for r in self.episodes[before:]):
            self.first_success_step = self.env_steps + self.env.num_envs  # counted after this call
        return real

    def _extra_identity(self) -> dict[str, Any]:
        return {"intrinsic": self.intrinsic_identity}

    def _extra_summary(self) -> dict[str, Any]:
        if self._annotator is not None:
            self._annotator.close()  # the run is over: let the batch in flight finish, so its fate is counted
        stats = self.env.stats() if hasattr(self.env, "stats") else {}
        return {
            "intrinsic": self.intrinsic_name,
            "first_success_step": self.first_success_step,
            "intrinsic_stats": stats,
            "warnings": lm_warnings(stats, self._annotator),
        }


def lm_warnings(stats: dict[str, float], annotator: Any = None) -> list[str]:
    """Human-readable notes on language-model faults during a run (empty when there were none)."""
    out = []
    errors, unknown = stats.get("annotator/errors", 0), stats.get("annotator/unknown", 0)
    if errors:
        last = getattr(annotator, "last_error", None)
        out.append(
            f"the language model failed on {int(errors)} caption question(s); those captions stayed "
            "unrewarded (each is asked again when it recurs)" + (f" (last error: {last})" if last else "")
        )
    if unknown:
        out.append(
            f"{int(unknown)} language-model answer(s) were unreadable after one retry and count as "
            "'unknown' (no reward)"
        )
    if stats.get("annotator/pending", 0):
        out.append(f"{int(stats['annotator/pending'])} caption question(s) were still unanswered at the end")
    return out
