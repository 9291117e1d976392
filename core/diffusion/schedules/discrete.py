"""Noise schedules of discrete-time (timestep-indexed) diffusion models.

A DDPM-style model is trained on ``T`` timesteps with variances ``betas``
(Ho et al. 2020). Its cumulative signal rate is ``alphas_cumprod[t] =
prod_{s<=t} (1 - betas[s])`` and, in the Karras et al. (2022) "variance
exploding" view that our samplers use, timestep ``t`` has the noise level
``sigma[t] = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t])``.

Beta schedules follow diffusers' ``beta_schedule`` names:

- ``linear``: ``linspace(beta_start, beta_end, T)`` (DDPM: 1e-4 to 0.02).
- ``scaled_linear``: ``linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2``
  (Stable Diffusion: 0.00085 to 0.012 over 1000 steps).
- ``squaredcos_cap_v2``: the cosine schedule of Nichol & Dhariwal (2021), eq. 17,
  betas capped at 0.999 (Imagen, DeepFloyd IF).

Everything here is computed on the host in float64.
"""

from __future__ import annotations

import math

import torch

BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear", "squaredcos_cap_v2")


def get_betas(
    schedule: str = "scaled_linear",
    num_train_timesteps: int = 1000,
    *,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    max_beta: float = 0.999,
) -> torch.Tensor:
    """Return the ``(T,)`` float64 betas of a named discrete schedule.

    Args:
        schedule: one of :data:`BETA_SCHEDULES`.
        num_train_timesteps: ``T``, the number of training timesteps.
        beta_start, beta_end: range of ``linear``/``scaled_linear``.
        max_beta: cap of ``squaredcos_cap_v2`` betas.

    Raises:
        ValueError: unknown schedule name or ``num_train_timesteps < 2``.
    """
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
    n = num_train_timesteps
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if schedule == "squaredcos_cap_v2":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
        return torch.tensor(betas, dtype=torch.float64)
    raise ValueError(
        f"unknown beta schedule {schedule!r}; choose one of {', '.join(BETA_SCHEDULES)}"
    )


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """``alphas_cumprod[t] = prod_{s<=t} (1 - betas[s])`` in float64."""
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Ascending Karras sigmas ``sqrt((1 - a) / a)`` of a trained ``alphas_cumprod`` table."""
    a = alphas_cumprod.to(torch.float64)
    return ((1 - a) / a).sqrt()


def get_alphas_cumprod(
    schedule: str = "scaled_linear", num_train_timesteps: int = 1000, **kwargs: float
) -> torch.Tensor:
    """``alphas_cumprod`` of a named beta schedule (see :func:`get_betas` for the options)."""
    return alphas_cumprod_from_betas(get_betas(schedule, num_train_timesteps, **kwargs))
