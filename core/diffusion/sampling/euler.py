"""Euler-family samplers on the Karras ODE ``dx/dsigma = (x - D(x, sigma)) / sigma``.

All share the signature ``sample_<name>(denoiser, x, sigmas, *, cond, callback=None,
noise_sampler=None, **opts)``: ``x`` starts at ``noise * sigmas[0]`` (or a noised
img2img start), the result is the final x0-space sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import attrs
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
    to_d,
)
from t2i.noise import NoiseSampler


@attrs.frozen
class _Churn:
    """Karras 2022 Alg. 2 lines 4-6 settings (``S_churn, S_tmin, S_tmax, S_noise``)."""

    s_churn: float
    s_tmin: float
    s_tmax: float
    s_noise: float
    noise_sampler: NoiseSampler | None

    def __attrs_post_init__(self) -> None:
        check_nonneg("s_churn", self.s_churn)

    def __call__(
        self, x: torch.Tensor, sigma: float, sigma_next: float, n: int
    ) -> tuple[torch.Tensor, float]:
        """Raise the noise level to ``sigma_hat = sigma (1 + gamma)``: ``(x_hat, sigma_hat)``."""
        gamma = (
            min(self.s_churn / n, math.sqrt(2) - 1) if self.s_tmin <= sigma <= self.s_tmax else 0.0
        )
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            ns = self.noise_sampler or default_noise_sampler(x)
            x = x + ns(sigma, sigma_next) * self.s_noise * math.sqrt(sigma_hat**2 - sigma**2)
        return x, sigma_hat


_KarrasStep = Callable[[Any, Any, torch.Tensor, torch.Tensor, float, float], torch.Tensor]
"""``step(denoiser, cond, x, d, sigma_hat, sigma_next) -> x_next`` given ``d = dx/dsigma``."""


def _sample_churned(
    step: _KarrasStep,
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    cond: Any,
    callback: StepCallback | None,
    churn: _Churn,
) -> torch.Tensor:
    """Karras et al. (2022) Algorithm 2's loop: churn to ``sigma_hat`` (lines 4-6), evaluate
    ``d = (x - D(x, sigma_hat)) / sigma_hat`` (line 7), then ``step`` to ``sigma_next``."""
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        x, sigma_hat = churn(x, sigma, sigma_next, n)
        denoised = denoise(denoiser, x, sigma_hat, cond)
        x = step(denoiser, cond, x, to_d(x, sigma_hat, denoised), sigma_hat, sigma_next)
        report_step(callback, i, n, sigma_hat, sigma_next, x, denoised)
    return x


def _euler_step(
    denoiser: Any, cond: Any, x: torch.Tensor, d: torch.Tensor, sigma_hat: float, sigma_next: float
) -> torch.Tensor:
    """Alg. 2 line 8: ``x_next = x + (sigma_next - sigma_hat) d``."""
    return x + d * (sigma_next - sigma_hat)


def _heun_step(
    denoiser: Any, cond: Any, x: torch.Tensor, d: torch.Tensor, sigma_hat: float, sigma_next: float
) -> torch.Tensor:
    """Alg. 2 lines 8-11: Euler, then the trapezoidal correction (Euler on the step to 0)."""
    dt = sigma_next - sigma_hat
    if sigma_next == 0:
        return x + d * dt
    x_2 = x + d * dt
    denoised_2 = denoiser(x_2, sigma_batch(x, sigma_next), cond)
    d_2 = to_d(x_2, sigma_next, denoised_2)
    return x + (d + d_2) * (dt / 2)


def _dpm_2_step(
    denoiser: Any, cond: Any, x: torch.Tensor, d: torch.Tensor, sigma_hat: float, sigma_next: float
) -> torch.Tensor:
    """DPM2: the derivative at the geometric midpoint ``sigma_mid`` (Euler on the step to 0)."""
    if sigma_next == 0:
        return x + d * (sigma_next - sigma_hat)
    sigma_mid = math.exp(0.5 * (math.log(sigma_hat) + math.log(sigma_next)))
    x_2 = x + d * (sigma_mid - sigma_hat)
    denoised_2 = denoiser(x_2, sigma_batch(x, sigma_mid), cond)
    return x + to_d(x_2, sigma_mid, denoised_2) * (sigma_next - sigma_hat)


def sample_euler(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler method, Karras et al. (2022) Algorithm 2 without the 2nd-order correction.

    ``s_churn > 0`` adds noise before each step (stochastic sampler, Alg. 2 lines 4-6).
    """
    churn = _Churn(s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
    return _sample_churned(_euler_step, denoiser, x, sigmas, cond, callback, churn)


def sample_euler_ancestral(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Ancestral Euler ("Euler a"): an Euler step to ``sigma_down`` plus fresh noise ``sigma_up``.

    ``eta=1`` samples the DDPM posterior (Ho et al. 2020); ``eta=0`` is :func:`sample_euler`.
    """
    check_nonneg("eta", eta)
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        denoised = denoise(denoiser, x, sigma, cond)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        x = add_noise(x, noise_sampler, sigma, sigma_next, sigma_up, s_noise)
        report_step(callback, i, n, sigma, sigma_next, x, denoised)
    return x


def sample_heun(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun's 2nd-order method, Karras et al. (2022) Algorithm 2 (Euler on the last step to 0)."""
    churn = _Churn(s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
    return _sample_churned(_heun_step, denoiser, x, sigmas, cond, callback, churn)


def sample_dpm_2(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver-2 (Lu et al. 2022, Alg. 1 with midpoint) in Karras' form ("DPM2").

    The midpoint is the geometric mean ``sqrt(sigma_hat * sigma_next)``; Euler on the last step.
    """
    churn = _Churn(s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
    return _sample_churned(_dpm_2_step, denoiser, x, sigmas, cond, callback, churn)


def sample_dpm_2_ancestral(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Ancestral DPM2 ("DPM2 a"): a DPM2 step to ``sigma_down`` plus fresh noise ``sigma_up``."""
    check_nonneg("eta", eta)
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        denoised = denoise(denoiser, x, sigma, cond)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        d = to_d(x, sigma, denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            sigma_mid = math.exp(0.5 * (math.log(sigma) + math.log(sigma_down)))
            x_2 = x + d * (sigma_mid - sigma)
            denoised_2 = denoiser(x_2, sigma_batch(x, sigma_mid), cond)
            x = x + to_d(x_2, sigma_mid, denoised_2) * (sigma_down - sigma)
            x = add_noise(x, noise_sampler, sigma, sigma_next, sigma_up, s_noise)
        report_step(callback, i, n, sigma, sigma_next, x, denoised)
    return x
