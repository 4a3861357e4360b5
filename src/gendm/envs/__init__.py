"""Environment construction, normalisation state, and named suites with reference returns."""

from gendm.envs.make import check_env_id, load_normalization_state, make_env, normalization_state

__all__ = ["check_env_id", "load_normalization_state", "make_env", "normalization_state"]
