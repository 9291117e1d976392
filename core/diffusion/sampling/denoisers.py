"""Adapters that turn eps-, v- and x0-prediction networks into ``D(x, sigma, cond) -> x0``.

Karras et al. (2022), section 5 and table 1: with preconditioning
``c_in = 1 / sqrt(sigma^2 + sigma_data^2)`` the network sees unit-variance input,
and its prediction maps to the denoised sample ``x0`` as:

- ``epsilon`` (Ho et al. 2020): ``x0 = x - sigma * eps``.
- ``v_prediction`` (Salimans & Ho 2022): ``x0 = c_skip * x + c_out * v`` with
  ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)`` and
  ``c_out = -sigma * sigma_data / sqrt(sigma^2 + sigma_data^2)``.
- ``sample``: the network predicts ``x0`` itself.
- ``edm`` (continuous only): ``x0 = c_skip * x + c_out' * F``, ``c_out' = -c_out`` (Karras F).

Each adapter also gives the training loss of its network, k-diffusion's ``loss()`` beside
``forward``: ``loss(x0, cond, noise=n, sigma=s)`` noises ``x0`` to ``x = x0 + s * n`` and
returns the per-sample mean squared error ``(B,)`` of the network's prediction against its
own target: ``n`` (epsilon, Ho et al. 2020), ``v = (sigma_data * n - (s / sigma_data) * x0)
/ sqrt(s^2 + sigma_data^2)`` (Salimans & Ho 2022), ``x0`` (sample), or for ``edm`` the
target ``(x0 - c_skip * x) / c_out`` of ``F``, which is Karras et al.'s loss weighting
``lambda(s) = (s^2 + sigma_data^2) / (s * sigma_data)^2`` of ``|D(x, s) - x0|^2``.

Discrete-time (DDPM-trained) models are timestep-indexed: sigma is mapped to a
fractional timestep by log-sigma interpolation of the trained table (as
k-diffusion's ``DiscreteSchedule.sigma_to_t`` and diffusers' ``_sigma_to_t``), the
input is scaled by ``1 / sqrt(sigma^2 + 1)`` (``sigma_data = 1``), which is the
variance-preserving sample ``sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from t2i.diffusion.schedules.discrete import sigmas_from_alphas_cumprod
from t2i.diffusion.schedules.sigmas import interp_log, sigma_to_t_log

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")

ModelFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
"""``model(x_in, t_or_sigma, cond) -> prediction``."""


def _check_prediction(prediction_type: str, allowed: tuple[str, ...]) -> None:
    if prediction_type not in allowed:
        raise ValueError(
            f"unknown prediction_type {prediction_type!r}; choose one of {', '.join(allowed)}"
        )


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))  # (B, 1, 1, 1)


def _to_x0(
    prediction_type: str,
    out: torch.Tensor,
    x: torch.Tensor,
    sigma: torch.Tensor,
    sigma_data: float,
) -> torch.Tensor:
    if prediction_type == "sample":
        return out
    if prediction_type == "epsilon":
        return x - sigma * out
    denom = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / denom
    c_out = sigma * sigma_data / denom.sqrt()
    if prediction_type == "v_prediction":
        return c_skip * x - c_out * out
    return c_skip * x + c_out * out  # edm


def _target(
    prediction_type: str,
    x0: torch.Tensor,
    noise: torch.Tensor,
    x: torch.Tensor,
    sigma: torch.Tensor,
    sigma_data: float,
) -> torch.Tensor:
    """What the network should predict for ``x = x0 + sigma * noise`` (the inverse of _to_x0)."""
    if prediction_type == "sample":
        return x0
    if prediction_type == "epsilon":
        return noise
    denom = sigma**2 + sigma_data**2
    if prediction_type == "v_prediction":
        return (sigma_data * noise - (sigma / sigma_data) * x0) / denom.sqrt()
    c_skip = sigma_data**2 / denom
    c_out = sigma * sigma_data / denom.sqrt()
    return (x0 - c_skip * x) / c_out  # edm: F's target


def _mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error ``(B,)``, in float32 at least."""
    dtype = torch.promote_types(out.dtype, torch.float32)
    return (out.to(dtype) - target.to(dtype)).pow(2).flatten(1).mean(1)


class DiscreteDenoiser:
    """A timestep-indexed model as a Karras denoiser.

    Args:
        model: ``model(x_in, t, cond) -> prediction`` where ``x_in = x / sqrt(sigma^2 + 1)``
            and ``t`` is a ``(B,)`` float tensor of fractional timesteps in ``[0, T-1]``
            (rounded to integers with ``quantize=True``).
        alphas_cumprod: ``(T,)`` trained cumulative signal rates (see
            :func:`t2i.diffusion.schedules.get_alphas_cumprod`).
        prediction_type: ``epsilon``, ``v_prediction`` or ``sample``.
        quantize: round timesteps to the nearest trained one (k-diffusion ``quantize``).

    Attributes:
        sigmas: ascending float64 CPU table ``sqrt((1 - a) / a)``, one per timestep.
        sigma_min, sigma_max: ``sigmas[0]``, ``sigmas[-1]``.
    """

    def __init__(
        self,
        model: ModelFn,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        *,
        quantize: bool = False,
    ) -> None:
        _check_prediction(prediction_type, PREDICTION_TYPES)
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten().cpu()
        if ac.numel() < 2 or not bool(((ac > 0) & (ac <= 1)).all()):
            raise ValueError("alphas_cumprod must hold at least 2 values in (0, 1]")
        sigmas = sigmas_from_alphas_cumprod(ac)
        if not bool((sigmas[1:] > sigmas[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing (sigmas ascending)")
        if float(sigmas[0]) <= 0:
            raise ValueError("alphas_cumprod[0] must be < 1 (sigma_min > 0)")
        self.model = model
        self.alphas_cumprod = ac
        self.sigmas = sigmas
        self.sigma_min = float(sigmas[0])
        self.sigma_max = float(sigmas[-1])
        self.prediction_type = prediction_type
        self.quantize = quantize
        self._tables: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def num_train_timesteps(self) -> int:
        return self.sigmas.numel()

    def _table(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        if key not in self._tables:
            self._tables[key] = self.sigmas.to(device=device, dtype=dtype)
        return self._tables[key]

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep of each sigma (log-sigma interpolation, clamped to the table)."""
        dtype = sigma.dtype if sigma.is_floating_point() else torch.float32
        t = sigma_to_t_log(sigma.to(dtype), self._table(sigma.device, dtype))
        return t.round() if self.quantize else t

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma at fractional timesteps ``t`` (log-sigma interpolation)."""
        return interp_log(t, self._table(t.device, t.dtype))

    def _predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """The network's own prediction at ``x``, ``sigma`` (eps, v or x0)."""
        s = _bcast(sigma.to(x.dtype), x)
        c_in = 1 / (s**2 + 1).sqrt()
        return self.model(x * c_in, self.sigma_to_t(sigma.to(x.dtype)), cond).to(x.dtype)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """``D(x, sigma, cond) -> x0`` with ``sigma`` a ``(B,)`` tensor."""
        out = self._predict(x, sigma, cond)
        return _to_x0(self.prediction_type, out, x, _bcast(sigma.to(x.dtype), x), 1.0)

    def loss(
        self, x0: torch.Tensor, cond: Any, *, noise: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample MSE ``(B,)`` of the prediction at ``x0 + sigma * noise`` against its
        target (module docstring). With ``sigma = sigmas[t]`` the network sees the DDPM
        sample ``sqrt(a_t) x0 + sqrt(1 - a_t) noise`` at timestep ``t``."""
        s = _bcast(sigma.to(x0.dtype), x0)
        x = x0 + s * noise
        out = self._predict(x, sigma, cond)
        return _mse(out, _target(self.prediction_type, x0, noise, x, s, 1.0))


class ContinuousDenoiser:
    """A model trained on continuous sigmas (EDM-style) as a Karras denoiser.

    Args:
        model: ``model(x_in, c_noise, cond) -> prediction``, ``x_in = x / sqrt(sigma^2 +
            sigma_data^2)``, ``c_noise = noise_input(sigma)`` (default: sigma itself;
            EDM uses ``log(sigma) / 4``).
        sigma_min, sigma_max: the trained sigma range.
        prediction_type: ``epsilon``, ``v_prediction``, ``sample`` or ``edm``.
        sigma_data: standard deviation of the data (Karras et al. 2022: 0.5 for images).
        noise_input: maps the ``(B,)`` sigma tensor to the network's noise input.
    """

    def __init__(
        self,
        model: ModelFn,
        sigma_min: float,
        sigma_max: float,
        prediction_type: str = "epsilon",
        *,
        sigma_data: float = 1.0,
        noise_input: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        _check_prediction(prediction_type, (*PREDICTION_TYPES, "edm"))
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.model = model
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.prediction_type = prediction_type
        self.sigma_data = float(sigma_data)
        self.noise_input = noise_input or (lambda s: s)

    def _predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """The network's own prediction at ``x``, ``sigma`` (eps, v, x0 or EDM's F)."""
        sigma = sigma.to(x.dtype)
        c_in = 1 / (_bcast(sigma, x) ** 2 + self.sigma_data**2).sqrt()
        return self.model(x * c_in, self.noise_input(sigma), cond).to(x.dtype)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """``D(x, sigma, cond) -> x0`` with ``sigma`` a ``(B,)`` tensor."""
        out = self._predict(x, sigma, cond)
        s = _bcast(sigma.to(x.dtype), x)
        return _to_x0(self.prediction_type, out, x, s, self.sigma_data)

    def loss(
        self, x0: torch.Tensor, cond: Any, *, noise: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample MSE ``(B,)`` of the prediction at ``x0 + sigma * noise`` against its
        target (module docstring); for ``edm`` that is EDM's weighted denoising loss."""
        s = _bcast(sigma.to(x0.dtype), x0)
        x = x0 + s * noise
        out = self._predict(x, sigma, cond)
        return _mse(out, _target(self.prediction_type, x0, noise, x, s, self.sigma_data))
