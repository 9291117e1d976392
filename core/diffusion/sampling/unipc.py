"""UniPC: unified predictor-corrector multistep sampler (Zhao et al. 2023, "UniPC").

Data-prediction form (UniPC with DPM-Solver++'s ``x0`` parameterisation), in Karras'
``x`` and ``lambda = -log(sigma)``. Each step ``s -> t`` with ``h = lambda_t - lambda_s``:

- UniP-p (Alg. 2, predictor): ``x_t = (sigma_t / sigma_s) x_s - phi_1 m_s - B(h)
  sum_k rho_k D_k`` with ``phi_1 = expm1(-h)``, ``D_k = (m_{s_k} - m_s) / r_k`` from
  older x0 predictions ``m`` at ``lambda_{s_k} = lambda_s + r_k h``.
- UniC-p (Alg. 1, corrector): once ``m_t = D(x_t)`` is known (the next step's model
  call, no extra evaluation) the same update is redone with ``m_t`` included, giving the
  corrected ``x_t``; the model output itself is not recomputed.

``B(h) = expm1(-h)`` is variant ``bh2`` (diffusers' default, for guided sampling) and
``B(h) = -h`` is ``bh1``. The order rises to ``order`` as history builds up and drops
to 1 on the final step (``lower_order_final``), which returns the last x0 prediction
when it ends at sigma 0. This matches diffusers' ``UniPCMultistepScheduler``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from t2i.diffusion.sampling.common import StepCallback, denoise, report_step, sigma_list
from t2i.noise import NoiseSampler

UNIPC_VARIANTS = ("bh1", "bh2")


def _coefficients(
    h: float, rks: list[float], variant: str
) -> tuple[list[list[float]], list[float], float, float]:
    """The linear system ``R rho = b`` of UniPC (Zhao et al. 2023, eq. 11) for step size ``h``."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = math.expm1(hh) if variant == "bh2" else hh
    factorial = 1
    rows, b = [], []
    for i in range(1, len(rks) + 1):
        rows.append([rk ** (i - 1) for rk in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return rows, b, h_phi_1, b_h


def _solve(rows: list[list[float]], b: list[float]) -> list[float]:
    """Host-side solve (numpy: no device tensor, no sync)."""
    return [float(v) for v in np.linalg.solve(np.array(rows), np.array(b))]


def _update(
    x: torch.Tensor,
    sig: list[float],
    s_idx: int,
    t_sigma: float,
    history: list[torch.Tensor],
    order: int,
    variant: str,
    m_t: torch.Tensor | None,
) -> torch.Tensor:
    """One UniP (``m_t is None``) or UniC update from ``sig[s_idx]`` to ``t_sigma``."""
    sigma_s = sig[s_idx]
    lam_s = -math.log(sigma_s)
    h = -math.log(t_sigma) - lam_s
    m_s = history[-1]
    rks, d1s = [], []
    for i in range(1, order):
        lam_i = -math.log(sig[s_idx - i])
        rk = (lam_i - lam_s) / h
        rks.append(rk)
        d1s.append((history[-(i + 1)] - m_s) / rk)
    rks.append(1.0)
    rows, b, h_phi_1, b_h = _coefficients(h, rks, variant)
    x_t = x * (t_sigma / sigma_s) - m_s * h_phi_1
    if m_t is None:  # predictor
        if d1s:
            rhos = [0.5] if order == 2 else _solve([r[:-1] for r in rows[:-1]], b[:-1])
            x_t = x_t - sum(r * d for r, d in zip(rhos, d1s)) * b_h
        return x_t
    rhos = [0.5] if order == 1 else _solve(rows, b)
    corr = sum((r * d for r, d in zip(rhos[:-1], d1s)), torch.zeros_like(x))
    return x_t - (corr + (m_t - m_s) * rhos[-1]) * b_h


def sample_unipc(
    denoiser: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    cond: Any,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    order: int = 2,
    variant: str = "bh2",
    use_corrector: bool = True,
) -> torch.Tensor:
    """UniPC multistep sampler, Zhao et al. (2023) Alg. 1-2 (UniP-p + UniC-p), data prediction.

    Args:
        order: solver order ``p`` (1-3); diffusers' default is 2.
        variant: ``bh2`` (default) or ``bh1``, the choice of ``B(h)``.
        use_corrector: apply UniC after every step but the last (``False``: UniP only).
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if variant not in UNIPC_VARIANTS:
        raise ValueError(f"variant must be one of {UNIPC_VARIANTS}, got {variant!r}")
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    history: list[torch.Tensor] = []
    last_x: torch.Tensor | None = None
    last_order = 1
    for i, (sigma, sigma_next) in enumerate(pairwise(sig)):
        denoised = denoise(denoiser, x, sigma, cond)
        if use_corrector and last_x is not None:
            x = _update(last_x, sig, i - 1, sigma, history, last_order, variant, denoised)
        history.append(denoised)
        history = history[-order:]
        this_order = min(order, n - i, len(history))
        last_x = x
        if sigma_next == 0:
            x = denoised  # lower_order_final: the step into 0 is first order
        else:
            x = _update(x, sig, i, sigma_next, history, this_order, variant, None)
        last_order = this_order
        report_step(callback, i, n, sigma, sigma_next, x, denoised)
    return x
