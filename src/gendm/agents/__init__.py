"""One file per method. Importing this package registers every agent in ``gendm.core.methods.METHODS``."""

from gendm.agents import (  # noqa: F401  (registration)
    bc,
    bet_bc,
    crossq,
    diffuser,
    diffusion_policy,
    diffusion_ql,
    dqn,
    droq,
    idql,
    iql,
    mdn_bc,
    ppo,
    redq,
    sac,
    td3,
    td3bc,
    vgps,
)
from gendm.agents.base import Agent, BaseConfig, OfflineAgent, OfflineConfig, OffPolicyConfig, agent_method

__all__ = ["Agent", "BaseConfig", "OffPolicyConfig", "OfflineAgent", "OfflineConfig", "agent_method"]
