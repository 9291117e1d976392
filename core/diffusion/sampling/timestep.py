"""The timestep samplers of latent diffusion: DDIM, DDPM and PLMS, in Karras' sigma form.

In the variable ``x = x_vp / sqrt(alpha_bar)`` with ``sigma = sqrt((1 - alpha_bar) /
alpha_bar)`` (Karras et al. 2022, section 4 / appendix), these classic samplers are:

- DDIM (Song et al. 2021, eq. 12): ``x' = x0 + sigma_down * eps + sigma_up * z`` where the
  DDIM ``eta`` gives ``sigma_up = eta * sigma' * sqrt(1 - sigma'^2 / sigma^2)`` and
  ``sigma_down = sqrt(sigma'^2 - sigma_up^2)``; ``eta = 0`` is the Euler step.
- DDPM ancestral sampling (Ho et al. 2020, eq. 6-7) with the posterior variance
  ``beta_tilde`` ("fixed_small"): exactly DDIM with ``eta = 1``.
- PLMS (Liu et al. 2022, "Pseudo Numerical Methods", PNDM with ``skip_prk_steps``):
  Adams-Bashforth combinations of eps through the DDIM transfer, the first step by
  the pseudo improved Euler (2 model calls) as diffusers' ``PNDMScheduler``.

They start at ``noise * sigmas[0]`` like every sampler here; a run ends at sigma 0,
which is diffusers' ``set_alpha_to_one=True``.
"""

from __future__ import annotations

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


def sample_ddim(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM, Song et al. (2021) eq. 12 with the ``eta`` of eq. 16 (0 = deterministic)."""
    check_nonneg("eta", eta)
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    if eta > 0:
        noise_sampler = noise_sampler or default_noise_sampler(x)
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        denoised = denoise(denoiser, x, sigma, cond)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        eps = (x - denoised) / sigma
        x = denoised + eps * sigma_down
        x = add_noise(x, noise_sampler, sigma, sigma_next, sigma_up)
        report_step(callback, i, n, sigma, sigma_next, x, denoised)
    return x


def sample_ddpm(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DDPM ancestral sampling, Ho et al. (2020) Algorithm 2 with ``beta_tilde`` variance.

    On a subsequence of timesteps this is the posterior ``q(x_{t'} | x_t, x0)`` between
    consecutive sigmas, i.e. :func:`sample_ddim` with ``eta = 1``.
    """
    return sample_ddim(
        denoiser, x, sigmas, cond=cond, callback=callback, noise_sampler=noise_sampler, eta=1.0
    )


_AB = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}
"""Adams-Bashforth weights, newest first."""


def sample_plms(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """PLMS, Liu et al. (2022) eq. 12 (PNDM without Runge-Kutta warm-up, ``skip_prk_steps``).

    Step ``i`` moves with ``x' = x + (sigma' - sigma) * eps_hat`` (the DDIM transfer),
    ``eps_hat`` the Adams-Bashforth combination of up to 4 past eps; the first step
    averages eps at both ends (pseudo improved Euler), costing one extra model call.
    """
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    history: list[torch.Tensor] = []
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        denoised = denoise(denoiser, x, sigma, cond)
        eps = (x - denoised) / sigma
        if not history and sigma_next > 0:
            x_pred = x + eps * (sigma_next - sigma)
            denoised_pred = denoiser(x_pred, sigma_batch(x, sigma_next), cond)
            eps_hat = (eps + (x_pred - denoised_pred) / sigma_next) / 2
        else:
            recent = [eps, *reversed(history[-3:])]  # newest first
            eps_hat = sum(w * e for w, e in zip(_AB[len(recent)], recent))
        history.append(eps)
        x = x + eps_hat * (sigma_next - sigma)
        report_step(callback, i, n, sigma, sigma_next, x, denoised)
    return x
