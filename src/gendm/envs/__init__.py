"""Environment construction, normalisation state, and named suites with reference returns.

Importing this package registers gendm's own environments (``gendm/...`` ids) with Gymnasium.
"""

from gendm.envs import multimodal
from gendm.envs.make import check_env_id, load_normalization_state, make_env, normalization_state

multimodal.register()

__all__ = ["check_env_id", "load_normalization_state", "make_env", "normalization_state"]
