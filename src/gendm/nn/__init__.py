"""Network building blocks shared by every method."""

from gendm.nn.ensemble import EnsembleLinear, EnsembleMLP
from gendm.nn.mlp import mlp

__all__ = ["EnsembleLinear", "EnsembleMLP", "mlp"]
