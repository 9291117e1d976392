"""Imagen-family networks as Karras denoisers ``D(x, sigma, cond) -> x0`` (pixel space).

Both stages are discrete-time DDPM models on 1000 ``squaredcos_cap_v2`` timesteps (Nichol &
Dhariwal 2021; IF's schedule). :class:`ImagenDenoiser` maps sigma to a timestep and turns the
network's eps / v prediction into x0 (:class:`t2i.diffusion.sampling.denoisers.
DiscreteDenoiser`); a super-resolution stage reads ``cond.image`` (the previous stage's
output and its augmentation level), augments it (:mod:`t2i_imagen.noise_aug`) and stacks it
with the sample as the network's 6-channel input.

``data_range = (-1, 1)``: samples are pixels, so thresholding (``guidance="dynamic"``)
applies.
"""

from __future__ import annotations

from typing import Any

import torch

from t2i.contracts import DIFFUSION
from t2i.diffusion.sampling.denoisers import DiscreteDenoiser
from t2i.payloads import Conditioning
from t2i_imagen.noise_aug import augment

TIMESTEPS = 1000
SCHEDULE = "squaredcos_cap_v2"


def low_res_input(x_in: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cat([x_in, augmented low-res]), levels)`` for an SR network; ValueError without one."""
    image = getattr(cond, "image", None)
    if image is None:
        raise ValueError(
            "a super-resolution stage needs the low-resolution image (cond.image): run it "
            "after a base stage through LowResCondition"
        )
    aug = augment(
        image.image.to(x_in.device, x_in.dtype),
        image.noise_level.to(x_in.device),
        tuple(x_in.shape[-2:]),
        image.seeds,
    )
    return torch.cat([x_in, aug], 1), image.noise_level.to(x_in.device, torch.float32)


class EfficientUNetPredictor:
    """``(x_in, t, cond) -> prediction`` of an :class:`~t2i_imagen.efficient_unet.EfficientUNet`
    on ``cond``'s token states, mask and pooled vector (and ``cond.image`` for SR)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = next(self.unet.parameters()).dtype
        text = cond.embeds.to(x.device, dtype)
        mask = cond.mask
        if mask is None:
            mask = torch.ones(text.shape[:2], dtype=torch.bool, device=x.device)
        pooled = None if cond.pooled is None else cond.pooled.to(x.device, dtype)
        level = None
        if self.unet.config.noise_conditioning:
            x, level = low_res_input(x, cond)
        return self.unet(x.to(dtype), t, text, mask.to(x.device), pooled, level).to(x.dtype)


class IFPredictor:
    """``(x_in, t, cond) -> eps`` of an :class:`~t2i_imagen.if_unet.IFUNet`: the first 3 of
    its ``2 * 3`` output channels (the learned-range variance is not used by the engine's
    samplers); stage II stacks the augmented low-res image and passes its level as
    ``class_labels``."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        out, sample = unet.config.out_channels, 3
        self.channels = sample if out == 2 * sample else out

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = next(self.unet.parameters()).dtype
        level = None
        if self.unet.config.super_resolution:
            x, level = low_res_input(x, cond)
            level = level.to(dtype)
        text = cond.embeds.to(x.device, dtype)
        out = self.unet(x.to(dtype), t.to(dtype), text, level)
        return out[:, : self.channels].to(x.dtype)


class ImagenDenoiser(DiscreteDenoiser):
    """A pixel-space Imagen stage as a Karras denoiser.

    Args:
        predictor: ``(x_in, t, cond) -> prediction``.
        module: the network (moved by :meth:`to`).
        prediction_type: ``epsilon`` (IF) or ``v_prediction`` (imagen-shapes).
        super_resolution: whether it reads ``cond.image``.
        alphas_cumprod: the trained schedule (default: 1000 ``squaredcos_cap_v2`` steps).
        text_width: width of the text states it reads (checked against the encoder's).
        quantize: round timesteps to trained ones (IF's UNets saw integer timesteps).
    """

    model_contract = DIFFUSION
    data_range = (-1.0, 1.0)

    def __init__(
        self,
        predictor: Any,
        module: torch.nn.Module,
        prediction_type: str = "epsilon",
        *,
        super_resolution: bool = False,
        alphas_cumprod: torch.Tensor | None = None,
        text_width: int | None = None,
        quantize: bool = False,
    ) -> None:
        if alphas_cumprod is None:
            from t2i.diffusion.schedules import get_alphas_cumprod

            alphas_cumprod = get_alphas_cumprod(SCHEDULE, TIMESTEPS)
        super().__init__(predictor, alphas_cumprod, prediction_type, quantize=quantize)
        self.module = module
        self.super_resolution = super_resolution
        self.text_width = text_width

    def to(self, device=None, dtype=None) -> ImagenDenoiser:
        self.module.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def parameters(self):
        return self.module.parameters()

    def export_spec(self):
        """The network as one module (``export_name`` and example inputs of the module's own
        :meth:`export_example`), for exporters and ``Pipeline.parameter_count``."""
        from t2i.contracts import ExportedModule, ExportSpec

        name = "sr_unet" if self.super_resolution else "unet"
        names, inputs, axes = self.module.export_example()
        module = ExportedModule(name, self.module, inputs, names, ("out",), axes)
        return ExportSpec((module,), deployment=self._deployment())

    def _deployment(self):
        """How :mod:`t2i_imagen.deployed` rebuilds this stage around the exported network
        (None for a network it does not know)."""
        from t2i.contracts import Deployment

        cfg = self.module.config
        if isinstance(self.model, EfficientUNetPredictor):
            network = "efficient_unet"
            predictor = {
                "pooled": bool(cfg.pooled_dim),
                "noise_conditioning": bool(cfg.noise_conditioning),
            }
        elif isinstance(self.model, IFPredictor):
            network = "if_unet"
            predictor = {
                "super_resolution": bool(cfg.super_resolution),
                "channels": self.model.channels,
            }
        else:
            return None
        options = {
            "network": network,
            "prediction_type": self.prediction_type,
            "super_resolution": self.super_resolution,
            "alphas_cumprod": [float(a) for a in self.alphas_cumprod],
            "predictor": predictor,
            "text_width": self.text_width,
            "quantize": bool(self.quantize),
        }
        return Deployment("t2i_imagen.deployed:denoiser", options)
