"""One file per method. Importing this package registers every algorithm in ``ALGOS``."""

from gendm.agents import (  # noqa: F401  (registration)
    bc,
    bet_bc,
    diffuser,
    diffusion_policy,
    diffusion_ql,
    dqn,
    idql,
    iql,
    mdn_bc,
    ppo,
    sac,
    td3,
    td3bc,
    vgps,
)
from gendm.agents.base import ALGOS, Agent, AlgoSpec, BaseConfig, OfflineAgent, OfflineConfig, OffPolicyConfig

__all__ = ["ALGOS", "Agent", "AlgoSpec", "BaseConfig", "OffPolicyConfig", "OfflineAgent", "OfflineConfig"]
