"""DroQ: Dropout Q-functions (Hiraoka et al., 2022), as SAC with DroQ's settings.

Two critics with dropout and layer norm after each hidden layer (Linear, Dropout, LayerNorm, ReLU;
``SACConfig.critic_dropout``, ``critic_layer_norm``), dropout active in every critic pass including the
target's, many critic updates per env step (UTD 20, ``gradient_steps``), and the actor and temperature
updated once per 20 critic updates (``policy_frequency``) against the mean of the two critics
(``actor_q``). The update is SAC's reference path (``SAC._losses``); only the defaults differ. They
follow the authors' code (TakuyaHiraoka/Dropout-Q-Functions-for-Doubly-Efficient-Reinforcement-Learning:
dropout 0.01, layer norm, 2 critics, 20 critic updates per env step with one policy update, the policy on
the critics' mean when dropout is on, 256x256 networks, lr 3e-4, tau 0.005) and sbx's DroQ (dropout
0.01 with layer norm, gradient_steps=20, policy_delay=20). The target entropy is -dim(A) (SB3).
"""

from __future__ import annotations

from dataclasses import dataclass

from gendm.agents.base import agent_method
from gendm.agents.sac import SAC, SACConfig
from gendm.core.methods import register_method


@dataclass
class DroQConfig(SACConfig):
    num_critics: int = 2
    """Critics in the ensemble (DroQ: 2); the target takes their minimum."""
    critic_dropout: float = 0.01
    """Dropout rate in each hidden layer of the critics, before the layer norm (DroQ: 0.01)."""
    critic_layer_norm: bool = True
    """Layer norm after each hidden layer of the critics (DroQ)."""
    actor_q: str = "mean"
    """The actor's loss uses the mean of the critics (DroQ's code with dropout on)."""
    gradient_steps: int = 20
    """Critic updates per env step (DroQ's UTD ratio: 20). On one CPU thread a CPU benchmark may lower
    it with --set gradient_steps=..."""
    policy_frequency: int = 20
    """Gradient steps between actor (and temperature) updates: once per 20 critic updates (DroQ's code
    updates the policy once per env step; sbx's policy_delay=20)."""


register_method(
    agent_method(
        "droq",
        "off_policy",
        DroQConfig,
        SAC,
        ("box",),
        "DroQ: SAC with dropout + layer-norm critics, UTD 20",
    )
)
