"""REDQ: Randomized Ensembled Double Q-learning (Chen et al., 2021), as SAC with REDQ's settings.

An ensemble of N critics trained toward one target, which takes its minimum over a random subset of M
target critics drawn anew each update (``SACConfig.target_subset``), many critic updates per env step
(UTD G, ``gradient_steps``), the actor and temperature updated once per G critic updates
(``policy_frequency``) against the mean of all N critics (``actor_q``). The update is SAC's reference
path (``SAC._losses``); only the defaults differ. They follow the authors' code (watchernyu/REDQ,
``REDQSACAgent``: num_Q=10, num_min=2, utd_ratio=20, policy_update_delay=20, polyak 0.995, lr 3e-4,
batch 256, 256x256 networks, 5000 random start steps, initial alpha 1), except the target entropy:
-dim(A) here (SB3) where REDQ takes MBPO's per-task table, and the critic loss's factor 1/2 (SB3).
The authors' code updates the actor after the last of each G critic steps; here it is the first of
each phase, with G critic steps between actor steps either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from gendm.agents.base import agent_method
from gendm.agents.sac import SAC, SACConfig
from gendm.core.methods import register_method


@dataclass
class REDQConfig(SACConfig):
    num_critics: int = 10
    """Critics in the ensemble (REDQ's N: 10)."""
    target_subset: int | None = 2
    """Target critics the target's minimum is over, a random subset drawn each update (REDQ's M: 2)."""
    actor_q: str = "mean"
    """The actor's loss uses the mean over all N critics (REDQ)."""
    gradient_steps: int = 20
    """Critic updates per env step (REDQ's UTD ratio G: 20, the paper's and the code's). On one CPU
    thread an update at Pendulum sizes costs several times SAC's (see the method's tests and the
    issue-17 report), so a CPU benchmark may lower it with --set gradient_steps=..."""
    policy_frequency: int = 20
    """Gradient steps between actor (and temperature) updates: once per G critic updates (REDQ's
    policy_update_delay: 20)."""


register_method(
    agent_method(
        "redq",
        "off_policy",
        REDQConfig,
        SAC,
        ("box",),
        "REDQ: SAC with 10 critics, min over a random 2 in the target, UTD 20",
    )
)
