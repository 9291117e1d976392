"""Noise schedules: trained discrete schedules (betas) and sigma schedules for sampling.

Public API:
    :func:`get_betas`, :func:`get_alphas_cumprod`, :func:`sigmas_from_alphas_cumprod`
    (trained schedules ``linear``, ``scaled_linear``, ``squaredcos_cap_v2``);
    ``get_sigmas_<name>`` functions (descending, ending with 0);
    schedule objects with ``get_sigmas(model, steps)`` that the registry builds.
"""

from t2i.diffusion.schedules.discrete import (
    BETA_SCHEDULES,
    alphas_cumprod_from_betas,
    get_alphas_cumprod,
    get_betas,
    sigmas_from_alphas_cumprod,
)
from t2i.diffusion.schedules.named import (
    TABLE_SPACINGS,
    ExponentialSchedule,
    KarrasSchedule,
    PolyexponentialSchedule,
    TableSchedule,
)
from t2i.diffusion.schedules.sigmas import (
    append_zero,
    get_sigmas_ddim_uniform,
    get_sigmas_exponential,
    get_sigmas_karras,
    get_sigmas_leading,
    get_sigmas_linspace,
    get_sigmas_normal,
    get_sigmas_polyexponential,
    get_sigmas_simple,
    get_sigmas_trailing,
    interp_linear,
    interp_log,
    sigma_to_t_log,
)

__all__ = [
    "BETA_SCHEDULES",
    "TABLE_SPACINGS",
    "ExponentialSchedule",
    "KarrasSchedule",
    "PolyexponentialSchedule",
    "TableSchedule",
    "alphas_cumprod_from_betas",
    "append_zero",
    "get_alphas_cumprod",
    "get_betas",
    "get_sigmas_ddim_uniform",
    "get_sigmas_exponential",
    "get_sigmas_karras",
    "get_sigmas_leading",
    "get_sigmas_linspace",
    "get_sigmas_normal",
    "get_sigmas_polyexponential",
    "get_sigmas_simple",
    "get_sigmas_trailing",
    "interp_linear",
    "interp_log",
    "sigma_to_t_log",
    "sigmas_from_alphas_cumprod",
]
