"""Environment construction, normalisation state, and named suites with reference returns.

Importing this package registers gendm's own environments (``gendm/...`` ids) with Gymnasium,
including the text environments, whose optional dependencies (the ``text`` extra) load on ``gym.make``.
"""

from gendm.envs.make import check_env_id, load_normalization_state, make_env, normalization_state
from gendm.envs.registration import register_environments

register_environments()  # lazy: minigrid / textworld are imported by gym.make only

__all__ = ["check_env_id", "load_normalization_state", "make_env", "normalization_state"]
