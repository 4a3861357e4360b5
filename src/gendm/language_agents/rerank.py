"""Step-level re-ranking: a language policy proposes N candidate actions, a learned Q picks one.

The selection is :func:`gendm.steering.steer` itself, not a copy of its selectors: ``steer`` accepts
any callable ``propose(cond_rep, n) -> tensor`` as proposal and any ``scorer(x, cond_rep)``, so the
adapter here proposes the *indices* ``0..N-1`` of the text candidates and the scorer looks up their
precomputed Q values. ``selector="argmax"`` is best-of-N (Digi-Q's policy extraction, V-GPS);
``"softmax"`` samples a candidate with probability proportional to ``exp(Q / temperature)``.

Candidates come from :meth:`ReActAgent.propose`: ``"logprobs"`` (default; the valid actions ranked
by the model's log-probability, one call, never unreadable) or ``"sample"`` (N seeded sampled
answers; unreadable ones are dropped). With no readable candidate the policy's fallback is used and
counted as a parse failure. The chosen action is recorded in the policy's history, so its later
prompts read as if it had chosen it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gendm.core.errors import ConfigError
from gendm.language_agents.base import fallback_action
from gendm.language_agents.qmodel import QModel
from gendm.language_agents.react import ReActAgent
from gendm.steering import steer


class QRerankAgent:
    """``policy`` proposes ``num_candidates`` actions, ``q`` scores (observation, action), steer selects."""

    def __init__(
        self,
        policy: ReActAgent,
        q: QModel,
        num_candidates: int = 4,
        proposal: str = "logprobs",
        selector: str = "argmax",
        temperature: float = 1.0,
    ) -> None:
        if proposal not in ("logprobs", "sample"):
            raise ConfigError(f"proposal must be 'logprobs' or 'sample', got {proposal!r}.")
        self.policy, self.q = policy, q
        self.num_candidates, self.proposal = num_candidates, proposal
        self.selector, self.temperature = selector, temperature
        self.name = f"{policy.name}+q"
        self.last_candidates: list[str] = []
        self.last_scores: list[float] = []

    @property
    def backend(self) -> Any:
        return self.policy.backend

    @property
    def counters(self) -> Any:
        return self.policy.counters

    def reset(self, observation: str, info: dict[str, Any] | None = None, seed: int | None = None) -> None:
        self.policy.reset(observation, info, seed)
        self._gen = torch.Generator().manual_seed(0 if seed is None else seed)

    def act(self, observation: str, valid: Sequence[str]) -> str:
        cands = self.policy.propose(observation, valid, self.num_candidates, mode=self.proposal)
        self.last_candidates = cands
        if not cands:
            self.policy.counters.parse_failures += 1
            action = fallback_action(self.policy.config, valid, self.policy.rng)
            self.policy.record(observation, action, thought="(no readable candidate)")
            return action
        action = self.select(observation, cands)
        # the history reads as if the policy had chosen it (a meta-remark would be off-distribution)
        self.policy.record(observation, action, thought=f"I will {action}.")
        return action

    def select(self, observation: str, candidates: Sequence[str]) -> str:
        """One candidate chosen by ``steer`` over the Q values of (observation, candidate)."""
        q = torch.as_tensor(
            self.q.score([observation] * len(candidates), list(candidates)), dtype=torch.float32
        )
        self.last_scores = q.tolist()
        result = steer(
            lambda _cond, n: torch.arange(n),
            lambda idx, _cond: q[idx],
            num_candidates=len(candidates),
            batch_size=1,
            selector=self.selector,
            temperature=self.temperature,
            generator=getattr(self, "_gen", None),
        )
        return candidates[int(result.samples[0])]
