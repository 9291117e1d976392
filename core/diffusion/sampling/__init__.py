"""Diffusion sampler functions and denoiser adapters (k-diffusion's layout).

Public API:
    Adapters: :class:`DiscreteDenoiser`, :class:`ContinuousDenoiser`.
    Samplers ``sample_<name>(denoiser, x, sigmas, *, cond, callback=None,
    noise_sampler=None, **opts)``: euler, euler_ancestral, heun, dpm_2,
    dpm_2_ancestral, lms, dpmpp_2m, dpmpp_2m_sde, dpmpp_sde, ddim, ddpm, plms, unipc, lcm.

The glue the graph calls (:class:`t2i.diffusion.sampler.DiffusionSampler`) sits above.
"""

from t2i.diffusion.sampling.common import SamplerStep, ancestral_step, to_d
from t2i.diffusion.sampling.denoisers import PREDICTION_TYPES, ContinuousDenoiser, DiscreteDenoiser
from t2i.diffusion.sampling.dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_sde
from t2i.diffusion.sampling.euler import (
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
)
from t2i.diffusion.sampling.lcm import sample_lcm
from t2i.diffusion.sampling.lms import sample_lms
from t2i.diffusion.sampling.timestep import sample_ddim, sample_ddpm, sample_plms
from t2i.diffusion.sampling.unipc import sample_unipc

__all__ = [
    "PREDICTION_TYPES",
    "ContinuousDenoiser",
    "DiscreteDenoiser",
    "SamplerStep",
    "ancestral_step",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpm_2",
    "sample_dpm_2_ancestral",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_lcm",
    "sample_lms",
    "sample_plms",
    "sample_unipc",
    "to_d",
]
