"""Sigma schedules for sampling: which noise levels the sampler visits.

Every ``get_sigmas_<name>`` returns a descending float64 CPU tensor of ``n + 1``
values ending with 0 (``n`` sampler steps), like k-diffusion's functions. They
are computed once on the host; samplers read them as Python floats, so the
sampling loop never synchronises with the device.

Two families:

- *Range schedules* need only ``sigma_min``/``sigma_max``: :func:`get_sigmas_karras`
  (Karras et al. 2022, eq. 5, ``rho=7``), :func:`get_sigmas_exponential` (uniform in
  log sigma), :func:`get_sigmas_polyexponential`.
- *Table schedules* index the trained ascending sigma table of a discrete-time
  model (``model.sigmas``, one entry per training timestep):
  ``leading``/``trailing``/``linspace`` are diffusers' ``timestep_spacing``
  (Lin et al. 2023, table 2), ``uniform``/``normal`` and ``sgm_uniform`` are
  k-diffusion's ``DiscreteSchedule.get_sigmas`` / ComfyUI's ``normal`` (evenly
  spaced fractional timesteps, log-sigma interpolation), ``simple`` and
  ``ddim_uniform`` are ComfyUI's schedulers of those names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _check_steps(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"steps must be an integer >= 1, got {n!r}")


def _check_range(sigma_min: float, sigma_max: float) -> None:
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(
            f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
        )


def append_zero(sigmas: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Append the final ``0`` to a float64 CPU sigma tensor."""
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten().cpu()
    return torch.cat([s, s.new_zeros(1)])


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022), eq. 5: ``(max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho``."""
    _check_steps(n)
    _check_range(sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Noise levels evenly spaced in ``log sigma`` from ``sigma_max`` to ``sigma_min``."""
    _check_steps(n)
    _check_range(sigma_min, sigma_max)
    return append_zero(
        torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp()
    )


def get_sigmas_polyexponential(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0
) -> torch.Tensor:
    """Polynomial in ``log sigma`` (k-diffusion): ``rho=1`` is :func:`get_sigmas_exponential`."""
    _check_steps(n)
    _check_range(sigma_min, sigma_max)
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return append_zero((ramp * (hi - lo) + lo).exp())


# -- table schedules ----------------------------------------------------------------------------


def _table(model_sigmas: torch.Tensor) -> torch.Tensor:
    table = torch.as_tensor(model_sigmas, dtype=torch.float64).flatten().cpu()
    if table.numel() < 2:
        raise ValueError("a model's sigma table needs at least 2 entries")
    return table


def interp_linear(t: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Sigma at fractional timesteps ``t`` by linear interpolation (diffusers' ``np.interp``)."""
    t = t.clamp(0, table.numel() - 1)
    low = t.floor().long().clamp(max=table.numel() - 2)
    w = t - low
    return (1 - w) * table[low] + w * table[low + 1]


def interp_log(t: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Sigma at fractional timesteps ``t``, log-sigma interpolation (k-diffusion ``t_to_sigma``)."""
    t = t.clamp(0, table.numel() - 1)
    low = t.floor().long().clamp(max=table.numel() - 2)
    w = t - low
    return ((1 - w) * table[low].log() + w * table[low + 1].log()).exp()


def sigma_to_t_log(sigma: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Fractional timestep of ``sigma`` by log-sigma interpolation of an ascending table."""
    log_table = table.log()
    log_sigma = sigma.log()
    low = (torch.searchsorted(log_table, log_sigma, right=True) - 1).clamp(0, table.numel() - 2)
    lo, hi = log_table[low], log_table[low + 1]
    w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
    return low.to(sigma.dtype) + w


def get_sigmas_leading(model_sigmas: torch.Tensor, n: int, steps_offset: int = 1) -> torch.Tensor:
    """diffusers ``timestep_spacing="leading"``: ``t = i * (T // n) + steps_offset``, descending.

    ``steps_offset=1`` is Stable Diffusion's scheduler config (timesteps 981 ... 1 for 20 steps).
    """
    _check_steps(n)
    table = _table(model_sigmas)
    T = table.numel()
    if n > T:
        raise ValueError(f"leading spacing supports at most {T} steps, got {n}")
    t = (torch.arange(n, dtype=torch.float64) * (T // n)).round().flip(0) + steps_offset
    return append_zero(interp_linear(t, table))


def get_sigmas_trailing(model_sigmas: torch.Tensor, n: int) -> torch.Tensor:
    """diffusers ``timestep_spacing="trailing"``: ``t = round(T - i * T / n) - 1`` (ends at T-1)."""
    _check_steps(n)
    table = _table(model_sigmas)
    T = table.numel()
    t = (T - torch.arange(n, dtype=torch.float64) * (T / n)).round() - 1
    return append_zero(interp_linear(t, table))


def get_sigmas_linspace(model_sigmas: torch.Tensor, n: int) -> torch.Tensor:
    """diffusers ``timestep_spacing="linspace"`` (k-samplers): ``linspace(T-1, 0, n)``, linear."""
    _check_steps(n)
    table = _table(model_sigmas)
    t = torch.linspace(0, table.numel() - 1, n, dtype=torch.float64).flip(0)
    return append_zero(interp_linear(t, table))


def get_sigmas_normal(model_sigmas: torch.Tensor, n: int, *, sgm: bool = False) -> torch.Tensor:
    """Evenly spaced fractional timesteps from ``T-1`` to 0, log-sigma interpolation.

    This is k-diffusion's ``DiscreteSchedule.get_sigmas`` (A1111 "Uniform") and ComfyUI's
    ``normal``; ``sgm=True`` drops the last point of ``n + 1`` (ComfyUI/SGM ``sgm_uniform``).
    """
    _check_steps(n)
    table = _table(model_sigmas)
    T = table.numel()
    if sgm:
        t = torch.linspace(T - 1, 0, n + 1, dtype=torch.float64)[:-1]
    else:
        t = torch.linspace(T - 1, 0, n, dtype=torch.float64)
    return append_zero(interp_log(t, table))


def get_sigmas_simple(model_sigmas: torch.Tensor, n: int) -> torch.Tensor:
    """ComfyUI ``simple``: every ``T/n``-th trained sigma, counted down from the largest."""
    _check_steps(n)
    table = _table(model_sigmas)
    stride = table.numel() / n
    idx = torch.tensor([table.numel() - 1 - int(i * stride) for i in range(n)])
    return append_zero(table[idx])


def get_sigmas_ddim_uniform(model_sigmas: torch.Tensor, n: int) -> torch.Tensor:
    """ComfyUI ``ddim_uniform``: timesteps ``1, 1 + c, 1 + 2c, ...`` (``c = T // n``), reversed."""
    _check_steps(n)
    table = _table(model_sigmas)
    T = table.numel()
    stride = max(T // n, 1)
    idx = torch.arange(1, T, stride).flip(0)
    return append_zero(table[idx])
