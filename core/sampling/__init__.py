"""Diffusion sampling: denoiser adapters, seeded noise, samplers and the engine glue.

Public API:
    Adapters: :class:`DiscreteDenoiser`, :class:`ContinuousDenoiser`.
    Noise: :func:`seeded_noise`, :class:`BatchNoise`.
    Samplers ``sample_<name>(denoiser, x, sigmas, *, cond, callback=None,
    noise_sampler=None, **opts)``: euler, euler_ancestral, heun, dpm_2,
    dpm_2_ancestral, lms, dpmpp_2m, dpmpp_2m_sde, dpmpp_sde, ddim, ddpm, plms, unipc.
    Glue: :class:`DiffusionSampler`, :func:`resolve_sampler_name`, :func:`img2img_sigmas`.
"""

from t2i.sampling.common import SamplerStep, ancestral_step, to_d
from t2i.sampling.denoisers import PREDICTION_TYPES, ContinuousDenoiser, DiscreteDenoiser
from t2i.sampling.diffusion import DiffusionSampler, img2img_sigmas, validate_job
from t2i.sampling.dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_sde
from t2i.sampling.euler import (
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
)
from t2i.sampling.lms import sample_lms
from t2i.sampling.names import resolve_sampler_name
from t2i.sampling.noise import BatchNoise, NoiseSampler, seeded_noise
from t2i.sampling.timestep import sample_ddim, sample_ddpm, sample_plms
from t2i.sampling.unipc import sample_unipc

__all__ = [
    "PREDICTION_TYPES",
    "BatchNoise",
    "ContinuousDenoiser",
    "DiffusionSampler",
    "DiscreteDenoiser",
    "NoiseSampler",
    "SamplerStep",
    "ancestral_step",
    "img2img_sigmas",
    "resolve_sampler_name",
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
    "sample_lms",
    "sample_plms",
    "sample_unipc",
    "seeded_noise",
    "to_d",
    "validate_job",
]
