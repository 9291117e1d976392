"""Recipes of the Imagen family and their component factories.

- ``imagen-shapes``: the embedded default (frozen MiniLM, 32 px base, 32 -> 64 px SR).
- ``imagen`` (aliases ``deepfloyd-if``, ``if``): DeepFloyd IF diffusers folders, stage I
  (``checkpoint=``) and stage II (``sr_checkpoint=``), T5 from stage I's folder (or ``t5=``).

Both are :func:`t2i_imagen.cascade.cascade_recipe` graphs; their options are checked before
any file is read, and the cascade's structural checks (stage kinds, text widths, sizes,
guidance) run at build, before any model work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

THRESHOLDING = ("dynamic", "static")
"""Guidances that assume samples in [-1, 1]."""


def _engine_error(message: str):
    from t2i.engine import EngineError

    return EngineError(message)


def create_decoder(*, factor: int = 1):
    """Factory of ``imagen.pixels``: pixel space in [-1, 1] -> [0, 1] (and back, img2img,
    downsampled by ``factor``)."""
    from t2i_imagen.pixels import PixelDecoder

    return PixelDecoder(factor)


def create_shapes_denoiser(*, checkpoint: str | os.PathLike | None = None, stage: str = "base"):
    from t2i_imagen.shapes_model import create_denoiser

    return create_denoiser(checkpoint=checkpoint, stage=stage)


def check_guidance(recipe: str, guidance: Any, data_ranges: dict[str, Any]) -> None:
    """Thresholding guidance needs stages whose samples lie in [-1, 1] (EngineError)."""
    if guidance not in THRESHOLDING:
        return
    for stage, data_range in data_ranges.items():
        if data_range is None or tuple(data_range) != (-1.0, 1.0):
            raise _engine_error(
                f"recipe {recipe!r}: guidance={guidance!r} thresholds x0 to [-1, 1], but the "
                f"{stage} stage's samples range over {data_range}: use guidance='cfg'"
            )


def imagen_shapes_recipe(
    *,
    checkpoint: str | os.PathLike | None = None,
    sr_checkpoint: str | os.PathLike | None = None,
    guidance: str | None = None,
):
    """Recipe ``imagen-shapes``: the embedded cascade (64 px), or a ``t2i train imagen``
    folder (``checkpoint``; ``sr_checkpoint`` when the SR stage is elsewhere)."""
    from t2i.files import short_hash
    from t2i_imagen.cascade import cascade_recipe
    from t2i_imagen.shapes_model import default_weights, load_stage, stage_path

    for name, value in (("checkpoint", checkpoint), ("sr_checkpoint", sr_checkpoint)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise _engine_error(f"recipe 'imagen-shapes': {name}={value!r} must be a path")
    folder = Path(checkpoint) if checkpoint is not None else default_weights()
    sr_folder = Path(sr_checkpoint) if sr_checkpoint is not None else folder
    base, sr = load_stage(folder, "base"), load_stage(sr_folder, "sr")
    _check_shapes_pair(base, sr)
    check_guidance("imagen-shapes", guidance, {"base": (-1.0, 1.0), "sr": (-1.0, 1.0)})
    factor = sr.size // base.size
    comp = lambda name, **o: {"name": name, "options": o}  # noqa: E731
    components = {
        "tokenizer": comp("minilm"),
        "text_encoder": comp("minilm"),
        "base": comp("imagen.shapes_unet", checkpoint=str(folder), stage="base"),
        "sr": comp("imagen.shapes_unet", checkpoint=str(sr_folder), stage="sr"),
        "decoder": comp("imagen.pixels"),
    }
    defaults = {
        "width": sr.size,
        "height": sr.size,
        "steps": 25,
        "sampler": "dpmpp_2m",
        "schedule": "karras",
        "cfg_scale": 5.0,
        "guidance": guidance or "dynamic",
        "sr_steps": 15,
        "sr_sampler": "dpmpp_2m",
        "sr_schedule": "karras",
        "sr_cfg_scale": 2.0,
        "sr_guidance": "dynamic",
        "noise_level": 100,
    }
    return cascade_recipe(
        components=components,
        base_size=base.size,
        factor=factor,
        defaults=defaults,
        description=f"Imagen-style cascade on the shapes benchmark ({base.size} -> {sr.size} px)",
        model_name="imagen-shapes",
        model_hash=short_hash(stage_path(folder, "base")),
        infotext={"SR model hash": short_hash(stage_path(sr_folder, "sr"))},
    )


def _check_shapes_pair(base, sr) -> None:
    if base.unet.config.text_dim != sr.unet.config.text_dim:
        raise _engine_error(
            f"recipe 'imagen-shapes': the base stage reads text {base.unet.config.text_dim} "
            f"wide, the SR stage {sr.unet.config.text_dim}: pair stages trained on one encoder"
        )
    if sr.size % base.size:
        raise _engine_error(
            f"recipe 'imagen-shapes': SR size {sr.size} is not a multiple of the base's {base.size}"
        )
