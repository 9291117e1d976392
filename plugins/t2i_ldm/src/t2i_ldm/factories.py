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
    crop_top: int = 0,
    crop_left: int = 0,
    aesthetic_score: float = 6.0,
    negative_aesthetic_score: float = 2.5,
    deepcache: int | None = None,
    deepcache_branch: int = 1,
    **options: Any,
):
    """SD UNet as a Karras denoiser (epsilon or v-prediction, SD discrete schedule).

    ``deepcache``: a full UNet step every N steps, the shallow blocks of ``deepcache_branch``
    on the cached features between (:mod:`t2i_ldm.deepcache`; None: off).

    SDXL's micro-conditioning (used only by SDXL UNets): ``crop_top`` / ``crop_left``
    (A1111's ``sdxl_crop_top`` / ``_left``), the refiner's ``aesthetic_score`` (6.0) and
    ``negative_aesthetic_score`` (2.5); sizes are the image's.
    """
    from t2i_ldm.config import get_preset
    from t2i_ldm.deepcache import deepcache_for
    from t2i_ldm.denoiser import LdmDenoiser, MicroConditioning
    from t2i_ldm.unet import UNetModel

    def micro(factor: int) -> MicroConditioning:
        return MicroConditioning(
            factor=factor,
            crop_top_left=(int(crop_top), int(crop_left)),
            aesthetic_score=float(aesthetic_score),
            negative_aesthetic_score=float(negative_aesthetic_score),
        )

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
        factor = models.vae.config.factor if models.vae is not None else cfg.vae.factor
        cache = deepcache_for(models.unet, deepcache, deepcache_branch)
        return LdmDenoiser(
            models.unet, cfg.prediction_type, cfg.schedule, micro=micro(factor), deepcache=cache
        )
    cfg = get_preset(variant)
    unet = UNetModel(cfg.unet).to(device=device, dtype=dtype).eval()
    return LdmDenoiser(
        unet,
        prediction_type or cfg.prediction_type,
        cfg.schedule,
        micro=micro(cfg.vae.factor),
        deepcache=deepcache_for(unet, deepcache, deepcache_branch),
    )


def create_vae_decoder(
    *,
    checkpoint: str | os.PathLike | None = None,
    variant: str = "sd1",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_pickle: bool = False,
    vae: str | os.PathLike | None = None,
    tile_size: int | None = None,
    **options: Any,
):
    """SD KL-f8 VAE decoder (latents scaled by 0.18215) with ``encode`` for img2img.

    ``vae``: a standalone VAE file or diffusers VAE folder decoding in place of the
    checkpoint's (or the preset's) own, with its scaling factor (:mod:`t2i_ldm.vae_override`).
    ``tile_size``: decode in tiles of that many pixels (:mod:`t2i_ldm.vae_tiling`).
    """
    from t2i_ldm.config import get_preset
    from t2i_ldm.vae import AutoencoderKL, LdmDecoder

    if checkpoint is not None:
        from t2i_ldm.recipes import load_models

        models = load_models(checkpoint, dtype=dtype, allow_pickle=allow_pickle, **options)
        template = models.vae.config if models.vae is not None else models.config.vae
        if vae is None and models.vae is None:
            raise ValueError(f"{checkpoint} holds no VAE (first_stage_model.* keys)")
        if vae is None:
            return LdmDecoder(models.vae, tile_size=tile_size)
    else:
        template = get_preset(variant).vae
        if vae is None:
            model = AutoencoderKL(template).to(device=device, dtype=dtype).eval()
            return LdmDecoder(model, tile_size=tile_size)
    from t2i_ldm.vae_override import load_vae_override

    model = load_vae_override(vae, template, dtype=dtype, allow_pickle=allow_pickle)
    return LdmDecoder(model, tile_size=tile_size)
