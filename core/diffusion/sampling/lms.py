"""Linear multistep (LMS) sampler: Adams-Bashforth in sigma on the Karras ODE ("LMS")."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from t2i.diffusion.sampling.common import StepCallback, denoise, report_step, sigma_list, to_d
from t2i.noise import NoiseSampler


def lms_coefficient(order: int, sigmas: Sequence[float], i: int, j: int) -> float:
    """Weight of derivative ``d_{i-j}`` in the step ``sigma_i -> sigma_{i+1}``.

    The exact integral over ``[sigma_i, sigma_{i+1}]`` of the Lagrange basis polynomial
    through ``sigma_i, ..., sigma_{i-order+1}`` that is 1 at ``sigma_{i-j}`` (computed with
    polynomial algebra, not quadrature).
    """
    nodes = [sigmas[i - k] for k in range(order)]
    poly = np.polynomial.Polynomial([1.0])
    for k in range(order):
        if k != j:
            poly = poly * np.polynomial.Polynomial([-nodes[k], 1.0]) / (nodes[j] - nodes[k])
    antideriv = poly.integ()
    return float(antideriv(sigmas[i + 1]) - antideriv(sigmas[i]))


def sample_lms(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    order: int = 4,
) -> torch.Tensor:
    """Linear multistep method of ``order`` (k-diffusion ``sample_lms``, diffusers LMSDiscrete).

    Step ``i`` uses the last ``min(i + 1, order)`` derivatives.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    ds: list[torch.Tensor] = []
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        denoised = denoise(denoiser, x, sigma, cond)
        ds.append(to_d(x, sigma, denoised))
        if len(ds) > order:
            ds.pop(0)
        cur_order = min(i + 1, order)
        coeffs = [lms_coefficient(cur_order, sig, i, j) for j in range(cur_order)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
        report_step(callback, i, n, sigma, sigma_next, x, denoised)
    return x
