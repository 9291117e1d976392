"""DPM-Solver++ samplers (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling").

They integrate in ``lambda = -log(sigma)`` (half log-SNR) with the data prediction
``D(x, sigma)``; an exact step of the linear part gives
``x_next = (sigma_next / sigma) x - expm1(-h) D`` with ``h = lambda_next - lambda``.
The step into ``sigma = 0`` returns the last x0 prediction (first order, as
diffusers' ``final_sigmas_type="zero"`` with ``lower_order_final``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch

from t2i.diffusion.sampling.common import (
    StepCallback,
    add_noise,
    ancestral_step,
    check_nonneg,
    default_noise_sampler,
    denoise,
    report_step,
    sigma_batch,
    sigma_list,
)
from t2i.noise import NoiseSampler

SDE_SOLVER_TYPES = ("midpoint", "heun")


def sample_dpmpp_2m(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. (2022) Algorithm 2 ("DPM++ 2M").

    Multistep: ``D_hat = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}`` with ``r = h_{i-1} / h_i``;
    first order on the first step and on the step into 0.
    """
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    old_denoised: torch.Tensor | None = None
    h_last = 0.0
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        denoised = denoise(denoiser, x, sigma, cond)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            if old_denoised is None:
                d_hat = denoised
            else:
                r = h_last / h
                d_hat = denoised * (1 + 1 / (2 * r)) - old_denoised * (1 / (2 * r))
            x = x * (sigma_next / sigma) - d_hat * math.expm1(-h)
            h_last = h
        old_denoised = denoised
        report_step(callback, i, n, sigma, sigma_next, x, denoised)
    return x


def sample_dpmpp_2m_sde(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "midpoint",
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M), Lu et al. (2022) appendix / eq. for the SDE form ("DPM++ 2M SDE").

    ``eta`` scales the injected noise (``eta=1`` solves the reverse SDE, ``eta=0`` is
    :func:`sample_dpmpp_2m` up to the correction form); ``solver_type`` picks the
    2nd-order correction: ``midpoint`` (diffusers' default) or ``heun``.
    """
    check_nonneg("eta", eta)
    if solver_type not in SDE_SOLVER_TYPES:
        raise ValueError(f"solver_type must be one of {SDE_SOLVER_TYPES}, got {solver_type!r}")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    noise_sampler = noise_sampler or default_noise_sampler(x)
    old_denoised: torch.Tensor | None = None
    h_last = 0.0
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        denoised = denoise(denoiser, x, sigma, cond)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            eta_h = eta * h
            one_minus = -math.expm1(-h - eta_h)  # 1 - exp(-(1 + eta) h)
            x = x * (sigma_next / sigma * math.exp(-eta_h)) + denoised * one_minus
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    coeff = one_minus / (-h - eta_h) + 1
                else:
                    coeff = 0.5 * one_minus
                x = x + (denoised - old_denoised) * (coeff / r)
            if eta > 0:
                noise_scale = sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
                x = x + noise_sampler(sigma, sigma_next) * noise_scale
            h_last = h
        old_denoised = denoised
        report_step(callback, i, n, sigma, sigma_next, x, denoised)
    return x


def sample_dpmpp_sde(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
) -> torch.Tensor:
    """Stochastic DPM-Solver++(2S) ("DPM++ SDE"): two stages per step, ancestral noise each.

    Lu et al. (2022) singlestep 2nd order with the intermediate point at
    ``lambda + r h``; both stages take an ancestral step (``eta``) as k-diffusion's
    ``sample_dpmpp_sde``. Euler on the step into 0. Two model calls per step.
    """
    check_nonneg("eta", eta)
    if not 0 < r < 1:
        raise ValueError(f"r must be in (0, 1), got {r}")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    noise_sampler = noise_sampler or default_noise_sampler(x)
    fac = 1 / (2 * r)
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        denoised = denoise(denoiser, x, sigma, cond)
        if sigma_next == 0:
            x = denoised
        else:
            lam, lam_next = -math.log(sigma), -math.log(sigma_next)
            h = lam_next - lam
            sigma_s = math.exp(-(lam + h * r))
            # stage 1: ancestral step sigma -> sigma_s
            s_down, s_up = ancestral_step(sigma, sigma_s, eta)
            x_2 = x * (s_down / sigma) - denoised * (s_down / sigma - 1)
            x_2 = add_noise(x_2, noise_sampler, sigma, sigma_s, s_up, s_noise)
            denoised_2 = denoiser(x_2, sigma_batch(x, sigma_s), cond)
            # stage 2: ancestral step sigma -> sigma_next with the combined prediction
            n_down, n_up = ancestral_step(sigma, sigma_next, eta)
            d_hat = denoised * (1 - fac) + denoised_2 * fac
            x = x * (n_down / sigma) - d_hat * (n_down / sigma - 1)
            x = add_noise(x, noise_sampler, sigma, sigma_next, n_up, s_noise)
        report_step(callback, i, n, sigma, sigma_next, x, denoised)
    return x
