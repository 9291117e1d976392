"""Component factories of the LDM family that take a checkpoint or a preset.

Both take either ``checkpoint=`` (a single file or diffusers folder) or ``variant=`` (a
preset of :mod:`t2i_ldm.config`, randomly initialised: for training and tests).
"""

from __future__ import annotations

import os
from typing import Any

import torch


def create_unet_denoiser(
    *,
    checkpoint: str | os.PathLike | None = None,
    variant: str = "sd1",
    prediction_type: str | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_pickle: bool = False,
    **options: Any,
):
    """SD UNet as a Karras denoiser (epsilon or v-prediction, SD discrete schedule)."""
    from t2i_ldm.config import get_preset
    from t2i_ldm.denoiser import LdmDenoiser
    from t2i_ldm.unet import UNetModel

    if checkpoint is not None:
        from t2i_ldm.recipes import load_models

        models = load_models(
            checkpoint,
            dtype=dtype,
            prediction_type=prediction_type,
            allow_pickle=allow_pickle,
            **options,
        )
        cfg = models.config
        return LdmDenoiser(models.unet, cfg.prediction_type, cfg.schedule)
    cfg = get_preset(variant)
    unet = UNetModel(cfg.unet).to(device=device, dtype=dtype).eval()
    return LdmDenoiser(unet, prediction_type or cfg.prediction_type, cfg.schedule)


def create_vae_decoder(
    *,
    checkpoint: str | os.PathLike | None = None,
    variant: str = "sd1",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_pickle: bool = False,
    **options: Any,
):
    """SD KL-f8 VAE decoder (latents scaled by 0.18215) with ``encode`` for img2img."""
    from t2i_ldm.config import get_preset
    from t2i_ldm.vae import AutoencoderKL, LdmDecoder

    if checkpoint is not None:
        from t2i_ldm.recipes import load_models

        models = load_models(checkpoint, dtype=dtype, allow_pickle=allow_pickle, **options)
        if models.vae is None:
            raise ValueError(f"{checkpoint} holds no VAE (first_stage_model.* keys)")
        return LdmDecoder(models.vae)
    vae = AutoencoderKL(get_preset(variant).vae).to(device=device, dtype=dtype).eval()
    return LdmDecoder(vae)
