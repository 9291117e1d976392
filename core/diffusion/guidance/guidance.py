"""Guidance: wrap a denoiser ``D(x, sigma, cond) -> x0`` into a guided one of the same contract.

- :class:`ClassifierFreeGuidance` (Ho & Salimans 2022): ``x0 = u + s (c - u)`` from the
  conditional ``c`` and unconditional/negative ``u`` predictions, computed in ONE model
  call on the concatenated batch ``[x; x]`` with ``Conditioning.cat([cond, uncond])``, whose
  :attr:`~t2i.payloads.Conditioning.negative` marks the second half's rows.
  Combining x0 predictions equals combining eps predictions: ``eps = (x - x0) / sigma``
  is affine in x0 with the same ``x`` for both halves.
- :class:`DynamicThresholding` (Saharia et al. 2022, Imagen, section 2.3; DeepFloyd IF):
  after CFG, ``s = clamp(quantile(|x0|, p), 1, max_value)`` per sample and
  ``x0 <- clamp(x0, -s, s) / s``.
- :class:`StaticThresholding`: CFG then ``clamp(x0, -1, 1)`` (Imagen's static thresholding).
- :class:`CFGRescale` (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps
  are Flawed", Alg. 2): rescale the guided prediction to the conditional one's per-sample
  std, mixed with ``phi``.
- :class:`NoGuidance`: the model alone, one call, no unconditional pass (any contract).

Each declares ``model_contract``: the model contract it wraps (:mod:`t2i.contracts`).

Thresholding assumes a data range of ``[-1, 1]`` (pixel-space models such as Imagen/IF).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import torch

from t2i.contracts import DIFFUSION
from t2i.payloads import Conditioning

Combine = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
"""``combine(x, sigma, cond_x0, uncond_x0, scale) -> x0``."""


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not scale >= 0:  # also rejects NaN
        raise ValueError(f"guidance scale must be >= 0 (1 = no guidance), got {scale}")
    return scale


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def _repeat_cond(cond: Any, batch: int) -> Any:
    if isinstance(cond, Conditioning):
        return cond.repeat_to(batch)
    return cond


class GuidedDenoiser:
    """A denoiser with guidance applied; forwards ``sigma_min``/``sigma_max``/``sigmas``.

    Args:
        model: the inner denoiser.
        uncond: unconditional (negative) conditioning; None runs the model alone.
        scale: guidance scale ``s``.
        combine: how ``(cond_x0, uncond_x0)`` become one x0 (default: CFG).
        post: an x0 -> x0 map applied after combining (thresholding), or None.
    """

    def __init__(
        self,
        model: Any,
        uncond: Conditioning | None,
        scale: float,
        combine: Combine | None = None,
        post: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.inner = model
        self.uncond = uncond
        self.scale = _check_scale(scale)
        self.combine = combine or cfg_combine
        self.post = post

    def __getattr__(self, name: str) -> Any:  # sigma_min, sigma_max, sigmas, ...
        if name in ("inner", "uncond", "scale", "combine", "post"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        batch = x.shape[0]
        if self.uncond is None or self.scale == 1.0:
            x0 = self.inner(x, sigma, _repeat_cond(cond, batch))
        elif self.scale == 0.0:
            x0 = self.inner(x, sigma, _repeat_cond(self.uncond, batch))
        else:
            both = Conditioning.cat([_repeat_cond(cond, batch), _repeat_cond(self.uncond, batch)])
            rows = torch.arange(2 * batch, device=both.embeds.device) >= batch
            both = attrs.evolve(both, negative=rows)
            out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), both)  # (2B, ...)
            cond_x0, uncond_x0 = out.chunk(2)
            x0 = self.combine(x, sigma, cond_x0, uncond_x0, self.scale)
        return self.post(x0) if self.post is not None else x0


def cfg_combine(
    x: torch.Tensor,
    sigma: torch.Tensor,
    cond_x0: torch.Tensor,
    uncond_x0: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Classifier-free guidance ``u + s (c - u)`` (Ho & Salimans 2022, eq. 6)."""
    return uncond_x0 + (cond_x0 - uncond_x0) * scale


@attrs.frozen
class NoGuidance:
    """Unguided: the model itself, on the positive conditioning only (the scale is ignored).

    Fits every model contract (diffusion denoisers, token predictors, generators).
    """

    model_contract: ClassVar[str | None] = None

    def wrap(self, model: Any, *, uncond: Conditioning | None = None, scale: float = 1.0) -> Any:
        _check_scale(scale)
        return model


@attrs.frozen
class ClassifierFreeGuidance:
    """Classifier-free guidance with negative conditioning, batched in one model call."""

    model_contract: ClassVar[str] = DIFFUSION

    def wrap(self, model: Any, *, uncond: Conditioning | None, scale: float) -> Any:
        return GuidedDenoiser(model, uncond, scale)


def dynamic_threshold(x0: torch.Tensor, percentile: float, max_value: float | None) -> torch.Tensor:
    """Imagen dynamic thresholding of an x0 batch: per sample ``s = clamp(q_p(|x0|), 1, max)``."""
    flat = x0.reshape(x0.shape[0], -1).abs()
    work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    s = torch.quantile(work, percentile, dim=1).clamp(min=1.0)
    if max_value is not None:
        s = s.clamp(max=max_value)
    s = _bcast(s.to(x0.dtype), x0)
    return torch.maximum(torch.minimum(x0, s), -s) / s


@attrs.frozen
class DynamicThresholding:
    """CFG followed by dynamic thresholding of x0 (Imagen; DeepFloyd IF).

    Attributes:
        percentile: ``p`` in (0, 1] (Imagen: 0.995).
        max_value: upper bound of ``s`` (DeepFloyd IF's ``sample_max_value``: 1.5); None
            leaves it unbounded as in the Imagen paper.
    """

    model_contract: ClassVar[str] = DIFFUSION

    percentile: float = 0.995
    max_value: float | None = 1.5

    def __attrs_post_init__(self) -> None:
        if not 0 < self.percentile <= 1:
            raise ValueError(f"percentile must be in (0, 1], got {self.percentile}")
        if self.max_value is not None and not self.max_value >= 1:
            raise ValueError(f"max_value must be >= 1 (or None), got {self.max_value}")

    def wrap(self, model: Any, *, uncond: Conditioning | None, scale: float) -> Any:
        return GuidedDenoiser(
            model,
            uncond,
            scale,
            post=lambda x0: dynamic_threshold(x0, self.percentile, self.max_value),
        )


@attrs.frozen
class StaticThresholding:
    """CFG followed by clamping x0 to ``[-limit, limit]`` (Imagen static thresholding)."""

    model_contract: ClassVar[str] = DIFFUSION

    limit: float = 1.0

    def __attrs_post_init__(self) -> None:
        if not self.limit > 0:
            raise ValueError(f"limit must be > 0, got {self.limit}")

    def wrap(self, model: Any, *, uncond: Conditioning | None, scale: float) -> Any:
        return GuidedDenoiser(
            model, uncond, scale, post=lambda x0: x0.clamp(-self.limit, self.limit)
        )


RESCALE_SPACES = ("v", "eps", "x0")


@attrs.frozen
class CFGRescale:
    """CFG with the std rescale of Lin et al. (2023), Alg. 2: ``phi`` mixes rescaled and plain.

    Attributes:
        phi: mixing factor (paper: 0.7); 0 is plain CFG.
        space: prediction in which stds are measured: ``v`` (default; the paper's
            v-prediction models, as ComfyUI's RescaleCFG), ``eps`` (diffusers'
            ``rescale_noise_cfg`` on an eps model) or ``x0``.
    """

    model_contract: ClassVar[str] = DIFFUSION

    phi: float = 0.7
    space: str = "v"

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.phi <= 1:
            raise ValueError(f"phi must be in [0, 1], got {self.phi}")
        if self.space not in RESCALE_SPACES:
            raise ValueError(f"space must be one of {RESCALE_SPACES}, got {self.space!r}")

    def _to_space(self, x: torch.Tensor, s: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if self.space == "x0":
            return x0
        if self.space == "eps":
            return (x - x0) / s
        return (x / (s**2 + 1) - x0) * (s**2 + 1).sqrt() / s  # v, sigma_data = 1

    def _from_space(self, x: torch.Tensor, s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if self.space == "x0":
            return p
        if self.space == "eps":
            return x - s * p
        return x / (s**2 + 1) - p * s / (s**2 + 1).sqrt()

    def combine(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond_x0: torch.Tensor,
        uncond_x0: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        s = _bcast(sigma.to(x.dtype), x)
        pos = self._to_space(x, s, cond_x0)
        neg = self._to_space(x, s, uncond_x0)
        guided = neg + (pos - neg) * scale
        dims = tuple(range(1, x.ndim))
        std_pos = pos.std(dim=dims, keepdim=True)
        std_cfg = guided.std(dim=dims, keepdim=True)
        rescaled = guided * (std_pos / std_cfg)
        return self._from_space(x, s, rescaled * self.phi + guided * (1 - self.phi))

    def wrap(self, model: Any, *, uncond: Conditioning | None, scale: float) -> Any:
        return GuidedDenoiser(model, uncond, scale, combine=self.combine)
