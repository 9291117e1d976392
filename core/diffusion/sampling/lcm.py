"""Latent Consistency Model sampling ("LCM"; Luo et al. 2023, arXiv 2310.04378, Alg. 1).

A consistency model maps any noisy point straight to the clean sample, so each step takes
the denoiser's prediction as the new sample and, unless it is the last, noises it back up
to the next level: ``x_next = D(x, sigma) + sigma_next * z``. This is k-diffusion's
``sample_lcm`` (A1111's "LCM" sampler); diffusers' ``LCMScheduler`` is the same step in VP
space, up to its boundary-condition blend ``c_skip * x`` (``c_skip`` below 1e-5 at the
timesteps it samples). For LCM-distilled models and LCM-LoRAs: 2-8 steps, CFG 1-2.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch

from t2i.diffusion.sampling.common import (
    StepCallback,
    default_noise_sampler,
    denoise,
    report_step,
    sigma_list,
)
from t2i.noise import NoiseSampler


def sample_lcm(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """LCM multistep sampling: ``x <- D(x, sigma)``, then ``+ sigma_next * z`` while
    ``sigma_next > 0`` (nothing is drawn at the last step, so seeded runs stay aligned)."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        denoised = denoise(denoiser, x, sigma, cond)
        x = denoised
        if sigma_next > 0:
            x = denoised + noise_sampler(sigma, sigma_next) * sigma_next
        report_step(callback, i, n, sigma, sigma_next, x, denoised)
    return x
