"""Generative families behind one ``sample`` operator: Gaussian diffusion, EDM, flow matching."""

from gendm.generative.base import GenerativeModel, Inpaint, StepContext
from gendm.generative.denoisers import make_denoiser
from gendm.generative.diffusion import GaussianDiffusion
from gendm.generative.edm import EDM
from gendm.generative.ema import EMA
from gendm.generative.flow import FlowMatching

__all__ = [
    "EDM",
    "EMA",
    "FlowMatching",
    "GaussianDiffusion",
    "GenerativeModel",
    "Inpaint",
    "StepContext",
    "make_denoiser",
]
