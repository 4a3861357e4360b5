"""Network building blocks shared by every method."""

from gendm.nn.batchrenorm import BatchRenorm
from gendm.nn.ensemble import EnsembleLinear, EnsembleMLP
from gendm.nn.gaussian import GaussianPolicy
from gendm.nn.mlp import mlp
from gendm.nn.normalizer import Normalizer

__all__ = ["BatchRenorm", "EnsembleLinear", "EnsembleMLP", "GaussianPolicy", "Normalizer", "mlp"]
