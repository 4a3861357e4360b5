"""The ``steer`` operator: propose, score, select or resample."""

from gendm.steering.steer import SELECTORS, SteerResult, steer

__all__ = ["SELECTORS", "SteerResult", "steer"]
