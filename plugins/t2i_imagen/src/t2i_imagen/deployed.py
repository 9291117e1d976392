"""Imagen denoisers rebuilt around an exported network (:class:`t2i.contracts.Deployment`).

A deployment runtime (ONNX Runtime) calls :func:`denoiser` with the exported ``unet`` /
``sr_unet`` (torch tensors in and out, the inputs of the network's ``export_example``) and
the options :meth:`t2i_imagen.denoiser.ImagenDenoiser.export_spec` recorded. The Karras
wrapper, the SR stage's noise augmentation and the IF output slicing are the torch stage's
own (:mod:`t2i_imagen.denoiser`, :mod:`t2i_imagen.noise_aug`); this module imports no network
code (``efficient_unet``, ``if_unet``, ``t5``). :func:`t5_text_encoder` rebuilds IF's T5 text
encoder around the exported ``text_encoder`` (``input_ids``, ``attention_mask``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from t2i.payloads import Conditioning, Tokens
from t2i_imagen.denoiser import ImagenDenoiser, low_res_input


class DeployedEfficientPredictor:
    """``(x_in, t, cond) -> prediction`` of an exported Efficient U-Net (inputs ``sample,
    timestep, text, mask[, pooled][, noise_level]``), as :class:`EfficientUNetPredictor`."""

    def __init__(self, net: Callable, *, pooled: bool, noise_conditioning: bool) -> None:
        self.net, self.pooled, self.noise_conditioning = net, pooled, noise_conditioning

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        text = cond.embeds.to(x.device, torch.float32)
        mask = cond.mask
        if mask is None:
            mask = torch.ones(text.shape[:2], dtype=torch.bool, device=x.device)
        inputs = [None, t.float(), text, mask.to(x.device)]
        if self.pooled:
            inputs.append(cond.pooled.to(x.device, torch.float32))
        if self.noise_conditioning:
            x, level = low_res_input(x, cond)
            inputs.append(level)
        inputs[0] = x.float()
        return self.net(*inputs).to(x.dtype)


class DeployedIFPredictor:
    """``(x_in, t, cond) -> eps`` of an exported IF UNet (the first ``channels`` outputs)."""

    def __init__(self, net: Callable, *, super_resolution: bool, channels: int) -> None:
        self.net, self.super_resolution, self.channels = net, super_resolution, channels

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        inputs = []
        if self.super_resolution:
            x, level = low_res_input(x, cond)
            inputs.append(level)
        text = cond.embeds.to(x.device, torch.float32)
        out = self.net(x.float(), t.float(), text, *inputs)
        return out[:, : self.channels].to(x.dtype)


def denoiser(
    modules: Mapping[str, Callable],
    *,
    network: str,
    prediction_type: str,
    super_resolution: bool,
    alphas_cumprod: list[float],
    predictor: Mapping[str, Any],
    text_width: int | None = None,
    quantize: bool = False,
) -> ImagenDenoiser:
    """Factory of an :class:`ImagenDenoiser`'s deployment (module ``unet`` or ``sr_unet``)."""
    net = modules["sr_unet" if super_resolution else "unet"]
    kinds = {"efficient_unet": DeployedEfficientPredictor, "if_unet": DeployedIFPredictor}
    if network not in kinds:
        raise ValueError(f"unknown Imagen network {network!r}: expected one of {sorted(kinds)}")
    return ImagenDenoiser(
        kinds[network](net, **predictor),
        net,
        prediction_type,
        super_resolution=super_resolution,
        alphas_cumprod=torch.tensor(alphas_cumprod, dtype=torch.float64),
        text_width=text_width,
        quantize=quantize,
    )


class DeployedT5TextEncoder:
    """:class:`t2i.contracts.TextEncoder` over an exported T5 encoder: ``Tokens ->
    Conditioning(embeds (B, 77, d_model), mask)`` as :class:`t2i_imagen.t5.T5TextEncoder`."""

    def __init__(self, encoder: Callable, hidden_size: int) -> None:
        self.encoder, self.hidden_size = encoder, hidden_size

    def __call__(self, tokens: Tokens) -> Conditioning:
        mask = tokens.mask
        if mask is None:
            mask = torch.ones_like(tokens.ids, dtype=torch.bool)
        with torch.no_grad():
            states = self.encoder(tokens.ids.to(torch.int64), mask.to(torch.int64))
        return Conditioning(embeds=states, mask=mask.to(states.device))

    def __repr__(self) -> str:
        return f"DeployedT5TextEncoder(width={self.hidden_size})"


def t5_text_encoder(modules: Mapping[str, Callable], *, hidden_size: int) -> DeployedT5TextEncoder:
    """Factory of a ``T5TextEncoder``'s deployment (module ``text_encoder``)."""
    return DeployedT5TextEncoder(modules["text_encoder"], int(hidden_size))
