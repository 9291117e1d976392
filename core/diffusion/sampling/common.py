"""Helpers shared by the sampler functions: the step record, sigma lists, ancestral steps.

The per-step plumbing every sampler repeats lives here too: :func:`denoise` (the model
call at a host-float sigma), :func:`add_noise` (ancestral noise injection) and
:func:`report_step` (the optional callback).

Every sampler reads its sigmas once as Python floats (:func:`sigma_list`), so all
per-step control flow (``if sigma_next == 0``) and coefficients are host arithmetic
and the loop never synchronises with the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import attrs
import torch

from t2i.noise import NoiseSampler


@attrs.frozen(eq=False)
class SamplerStep:
    """What a sampler's ``callback`` receives after step ``i`` (0-based) of ``total``.

    Attributes:
        i: index of the finished step; ``total``: number of steps.
        sigma, sigma_next: noise level before and after the step (``sigma_hat`` when churned).
        x: the sample after the step; ``denoised``: the step's x0 prediction.
    """

    i: int
    total: int
    sigma: float
    sigma_next: float
    x: torch.Tensor
    denoised: torch.Tensor


StepCallback = Callable[[SamplerStep], Any]


def sigma_list(sigmas: torch.Tensor | Sequence[float]) -> list[float]:
    """Host copy of the schedule as Python floats; validates it (descending, >= 2 values)."""
    values = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else [float(s) for s in sigmas]
    if len(values) < 2:
        raise ValueError(f"a schedule needs at least 2 sigmas (1 step), got {len(values)}")
    if any(b > a for a, b in pairwise(values)) or values[-1] < 0:
        raise ValueError("sigmas must be non-increasing and non-negative (e.g. ending with 0)")
    return values


def sigma_batch(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A ``(B,)`` tensor of ``sigma`` on ``x``'s device (float32 at least, no sync)."""
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    return torch.full((x.shape[0],), sigma, device=x.device, dtype=dtype)


def denoise(denoiser: Any, x: torch.Tensor, sigma: float, cond: Any) -> torch.Tensor:
    """The x0 prediction ``D(x, sigma)`` with ``sigma`` broadcast by :func:`sigma_batch`."""
    return denoiser(x, sigma_batch(x, sigma), cond)


def report_step(
    callback: StepCallback | None,
    i: int,
    total: int,
    sigma: float,
    sigma_next: float,
    x: torch.Tensor,
    denoised: torch.Tensor,
) -> None:
    """Hand the finished step ``i`` of ``total`` to ``callback`` as a :class:`SamplerStep`."""
    if callback is not None:
        callback(SamplerStep(i, total, sigma, sigma_next, x, denoised))


def to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """Karras ODE derivative ``dx/dsigma = (x - D(x, sigma)) / sigma`` (Karras 2022, eq. 3)."""
    return (x - denoised) / sigma


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step ``sigma -> sigma_next`` into a deterministic part and fresh noise.

    Returns ``(sigma_down, sigma_up)`` with ``sigma_down^2 + sigma_up^2 = sigma_next^2`` and
    ``sigma_up = eta * sigma_next * sqrt(1 - sigma_next^2 / sigma^2)``; ``eta=1`` is the
    DDPM posterior (Ho et al. 2020) and ``eta`` is DDIM's eta (Song et al. 2021, eq. 16).
    """
    if eta == 0 or sigma_next == 0:
        return sigma_next, 0.0
    sigma_up = min(
        sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
    )
    sigma_down = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
    return sigma_down, sigma_up


def add_noise(
    x: torch.Tensor,
    noise_sampler: NoiseSampler,
    sigma: float,
    sigma_next: float,
    sigma_up: float,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Ancestral noise: ``x + z * (s_noise * sigma_up)``, ``z = noise_sampler(sigma, sigma_next)``.

    Nothing is drawn when ``sigma_up`` is 0 (host check), so seeded runs stay aligned.
    """
    if sigma_up > 0:
        return x + noise_sampler(sigma, sigma_next) * (s_noise * sigma_up)
    return x


def default_noise_sampler(x: torch.Tensor) -> NoiseSampler:
    """Unseeded noise like ``x`` (global RNG); pass a seeded one for reproducible runs."""
    return lambda sigma, sigma_next: torch.randn_like(x)


def check_nonneg(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
