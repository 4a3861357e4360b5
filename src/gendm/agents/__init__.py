"""One file per method. Importing this package registers every algorithm in ``ALGOS``."""

from gendm.agents import dqn, ppo, sac, td3  # noqa: F401  (registration)
from gendm.agents.base import ALGOS, Agent, AlgoSpec, BaseConfig, OffPolicyConfig

__all__ = ["ALGOS", "Agent", "AlgoSpec", "BaseConfig", "OffPolicyConfig"]
