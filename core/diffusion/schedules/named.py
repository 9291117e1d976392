"""Registrable schedule objects: ``get_sigmas(model, steps) -> Tensor``.

A schedule entry's factory builds one of these; the sampler calls
``get_sigmas(model, steps)`` with the (possibly guided) denoiser. Range schedules
read ``model.sigma_min``/``model.sigma_max``; table schedules read the model's
ascending trained table ``model.sigmas`` and fail clearly if it has none.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from t2i.diffusion.schedules import sigmas as S


def _range(model: Any, sigma_min: float | None, sigma_max: float | None) -> tuple[float, float]:
    lo = sigma_min if sigma_min is not None else getattr(model, "sigma_min", None)
    hi = sigma_max if sigma_max is not None else getattr(model, "sigma_max", None)
    if lo is None or hi is None:
        raise TypeError(
            f"{type(model).__name__} has no sigma_min/sigma_max; wrap it in a "
            "t2i.diffusion.sampling DiscreteDenoiser/ContinuousDenoiser or pass sigma_min= and "
            "sigma_max= to the schedule"
        )
    return float(lo), float(hi)


def _model_table(model: Any, schedule: str) -> torch.Tensor:
    table = getattr(model, "sigmas", None)
    if table is None:
        raise TypeError(
            f"schedule {schedule!r} indexes a discrete-time model's trained timesteps, but "
            f"{type(model).__name__} has no 'sigmas' table; use a range schedule such as "
            "'karras' or 'exponential' for continuous-sigma models"
        )
    return table


@attrs.frozen
class KarrasSchedule:
    """Karras et al. (2022) eq. 5 between the model's sigma range, ``rho`` = 7."""

    rho: float = 7.0
    sigma_min: float | None = None
    sigma_max: float | None = None

    def get_sigmas(self, model: Any, steps: int) -> torch.Tensor:
        lo, hi = _range(model, self.sigma_min, self.sigma_max)
        return S.get_sigmas_karras(steps, lo, hi, self.rho)


@attrs.frozen
class ExponentialSchedule:
    """Uniform in log sigma over the model's range (diffusers ``use_exponential_sigmas``)."""

    sigma_min: float | None = None
    sigma_max: float | None = None

    def get_sigmas(self, model: Any, steps: int) -> torch.Tensor:
        lo, hi = _range(model, self.sigma_min, self.sigma_max)
        return S.get_sigmas_exponential(steps, lo, hi)


@attrs.frozen
class PolyexponentialSchedule:
    """Polynomial in log sigma (k-diffusion), ``rho`` = 1 as in A1111."""

    rho: float = 1.0
    sigma_min: float | None = None
    sigma_max: float | None = None

    def get_sigmas(self, model: Any, steps: int) -> torch.Tensor:
        lo, hi = _range(model, self.sigma_min, self.sigma_max)
        return S.get_sigmas_polyexponential(steps, lo, hi, self.rho)


@attrs.frozen
class TableSchedule:
    """A schedule over a discrete model's trained timesteps, chosen by ``spacing``.

    ``spacing`` is one of ``leading`` (``steps_offset`` applies), ``trailing``,
    ``linspace``, ``normal``, ``sgm_uniform``, ``simple``, ``ddim_uniform``.
    """

    spacing: str
    steps_offset: int = 1

    def __attrs_post_init__(self) -> None:
        if self.spacing not in TABLE_SPACINGS:
            raise ValueError(
                f"unknown spacing {self.spacing!r}; choose one of {', '.join(TABLE_SPACINGS)}"
            )

    def get_sigmas(self, model: Any, steps: int) -> torch.Tensor:
        table = _model_table(model, self.spacing)
        if self.spacing == "leading":
            return S.get_sigmas_leading(table, steps, self.steps_offset)
        if self.spacing == "sgm_uniform":
            return S.get_sigmas_normal(table, steps, sgm=True)
        return TABLE_SPACINGS[self.spacing](table, steps)


TABLE_SPACINGS = {
    "leading": S.get_sigmas_leading,
    "trailing": S.get_sigmas_trailing,
    "linspace": S.get_sigmas_linspace,
    "normal": S.get_sigmas_normal,
    "sgm_uniform": S.get_sigmas_normal,
    "simple": S.get_sigmas_simple,
    "ddim_uniform": S.get_sigmas_ddim_uniform,
}
