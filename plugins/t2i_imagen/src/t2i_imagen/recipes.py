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


STAGE_OPTIONS = {
    "noise_level": (int, "an integer timestep in [0, 1000)"),
    "sr_steps": (int, "an integer >= 1"),
    "sr_cfg_scale": ((int, float), "a number >= 0"),
    "sr_sampler": (str, "a registered sampler name"),
    "sr_schedule": (str, "a registered schedule name"),
    "sr_guidance": (str, "a registered guidance name"),
}
"""Recipe options that set the SR stage's request defaults (``noise_level=0`` ...)."""


def stage_defaults(recipe: str, defaults: dict[str, Any], options: dict[str, Any]) -> dict:
    """``defaults`` with the given SR-stage options (checked, EngineError) in place."""
    from t2i_imagen.noise_aug import check_noise_level

    out = dict(defaults)
    for name, value in options.items():
        if value is None:
            continue
        kind, need = STAGE_OPTIONS[name]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok and name == "noise_level":
            try:
                check_noise_level(value)
            except ValueError:
                ok = False
        if ok and name == "sr_steps":
            ok = value >= 1
        if ok and name == "sr_cfg_scale":
            ok = value >= 0
        if not ok:
            raise _engine_error(f"recipe {recipe!r}: {name}={value!r} must be {need}")
        out[name] = value
    return out


def imagen_shapes_recipe(
    *,
    checkpoint: str | os.PathLike | None = None,
    sr_checkpoint: str | os.PathLike | None = None,
    guidance: str | None = None,
    noise_level: int | None = None,
    sr_steps: int | None = None,
    sr_cfg_scale: float | None = None,
    sr_sampler: str | None = None,
    sr_schedule: str | None = None,
    sr_guidance: str | None = None,
):
    """Recipe ``imagen-shapes``: the embedded cascade (64 px), or a ``t2i train imagen``
    folder (``checkpoint``; ``sr_checkpoint`` when the SR stage is elsewhere); the ``sr_*``
    options and ``noise_level`` set the SR stage's defaults."""
    sr_options = {
        "noise_level": noise_level,
        "sr_steps": sr_steps,
        "sr_cfg_scale": sr_cfg_scale,
        "sr_sampler": sr_sampler,
        "sr_schedule": sr_schedule,
        "sr_guidance": sr_guidance,
    }
    from t2i.files import short_hash
    from t2i_imagen.cascade import cascade_recipe
    from t2i_imagen.shapes_model import default_weights, stage_info, stage_path

    for name, value in (("checkpoint", checkpoint), ("sr_checkpoint", sr_checkpoint)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise _engine_error(f"recipe 'imagen-shapes': {name}={value!r} must be a path")
    folder = Path(checkpoint) if checkpoint is not None else default_weights()
    sr_folder = Path(sr_checkpoint) if sr_checkpoint is not None else folder
    base, sr = stage_info(folder, "base"), stage_info(sr_folder, "sr")  # no network built
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
        "cfg_scale": 3.0,  # the judge's best of 3/5/7/9/12 (imagen-shapes.json: guidance_sweep)
        "guidance": guidance or "dynamic",
        "sr_steps": 15,
        "sr_sampler": "dpmpp_2m",
        "sr_schedule": "karras",
        "sr_cfg_scale": 2.0,
        "sr_guidance": "dynamic",
        "noise_level": 100,
    }
    defaults = stage_defaults("imagen-shapes", defaults, sr_options)
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
    if base.text_dim != sr.text_dim:
        raise _engine_error(
            f"recipe 'imagen-shapes': the base stage reads text {base.text_dim} "
            f"wide, the SR stage {sr.text_dim}: pair stages trained on one encoder"
        )
    if sr.size % base.size:
        raise _engine_error(
            f"recipe 'imagen-shapes': SR size {sr.size} is not a multiple of the base's {base.size}"
        )


# --- DeepFloyd IF ---------------------------------------------------------------------------

IF_DEFAULTS = {
    "steps": 100,
    "sampler": "ddpm",
    "schedule": "trailing",
    "cfg_scale": 7.0,
    "sr_steps": 50,
    "sr_sampler": "ddpm",
    "sr_schedule": "trailing",
    "sr_cfg_scale": 4.0,
    "noise_level": 250,
}
"""IF's pipeline defaults (stage I: 100 steps, CFG 7; stage II: 50 steps, CFG 4, noise 250),
with the engine's DDPM (``beta_tilde`` variance, not IF's learned range)."""


def _path_option(recipe: str, name: str, value: Any, *, required: bool = False) -> Path | None:
    if value is None:
        if required:
            raise _engine_error(f"recipe {recipe!r}: {name}= is required (an IF folder)")
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise _engine_error(f"recipe {recipe!r}: {name}={value!r} must be a folder path")
    return Path(value)


def check_if_pair(base, sr, t5_width: int | None) -> None:
    """Structural checks of an IF cascade on the folders' configs (EngineError)."""
    if base.stage != "I":
        raise _engine_error(
            f"recipe 'imagen': checkpoint {base.folder} is a stage {base.stage} "
            "(super-resolution) folder: pass it as sr_checkpoint= and a stage I folder as "
            "checkpoint="
        )
    if sr.stage != "II":
        raise _engine_error(
            f"recipe 'imagen': sr_checkpoint {sr.folder} is a stage {sr.stage} folder: pass an "
            "IFSuperResolutionPipeline folder"
        )
    widths = {"stage I UNet": base.unet.text_width, "stage II UNet": sr.unet.text_width}
    if t5_width is not None:
        widths["T5 encoder"] = t5_width
    if len(set(widths.values())) > 1:
        raise _engine_error(
            "recipe 'imagen': the stages read text of different widths "
            f"({', '.join(f'{k} {v}' for k, v in widths.items())}): pair stages trained on the "
            "same T5 encoder"
        )
    if sr.sample_size % base.sample_size:
        raise _engine_error(
            f"recipe 'imagen': stage II size {sr.sample_size} is not a multiple of stage I's "
            f"{base.sample_size}"
        )


def imagen_recipe(
    *,
    checkpoint: str | os.PathLike | None = None,
    sr_checkpoint: str | os.PathLike | None = None,
    t5: str | os.PathLike | None = None,
    variant: str | None = None,
    dtype: str | None = None,
    guidance: str | None = None,
    noise_level: int | None = None,
    sr_steps: int | None = None,
    sr_cfg_scale: float | None = None,
    sr_sampler: str | None = None,
    sr_schedule: str | None = None,
    sr_guidance: str | None = None,
):
    """Recipe ``imagen``: DeepFloyd IF stage I (``checkpoint``) -> stage II
    (``sr_checkpoint``), T5 from ``t5`` (a folder with ``text_encoder/`` and ``tokenizer/``;
    default: the stage I folder). ``variant="fp16"`` reads the fp16 files; ``dtype`` casts;
    the ``sr_*`` options and ``noise_level`` set the SR stage's defaults. Without any folder
    (``Engine.build("imagen", guidance="dynamic")``) it is the embedded ``imagen-shapes``."""
    if (checkpoint, sr_checkpoint, t5, variant, dtype) == (None,) * 5:
        return imagen_shapes_recipe(
            guidance=guidance,
            noise_level=noise_level,
            sr_steps=sr_steps,
            sr_cfg_scale=sr_cfg_scale,
            sr_sampler=sr_sampler,
            sr_schedule=sr_schedule,
            sr_guidance=sr_guidance,
        )
    sr_options = {
        "noise_level": noise_level,
        "sr_steps": sr_steps,
        "sr_cfg_scale": sr_cfg_scale,
        "sr_sampler": sr_sampler,
        "sr_schedule": sr_schedule,
        "sr_guidance": sr_guidance,
    }
    from t2i.files import short_hash
    from t2i_imagen.cascade import cascade_recipe
    from t2i_imagen.if_folder import read_stage, text_encoder_width, weight_files

    base_dir = _path_option("imagen", "checkpoint", checkpoint, required=True)
    sr_dir = _path_option("imagen", "sr_checkpoint", sr_checkpoint, required=True)
    t5_dir = _path_option("imagen", "t5", t5) or base_dir
    if variant not in (None, "fp16"):
        raise _engine_error(f"recipe 'imagen': variant={variant!r}; use None or 'fp16'")
    if dtype not in (None, "float32", "float16", "bfloat16"):
        raise _engine_error(f"recipe 'imagen': dtype={dtype!r}; use float32/float16/bfloat16")
    base, sr = read_stage(base_dir), read_stage(sr_dir)
    check_if_pair(base, sr, text_encoder_width(t5_dir))
    check_guidance("imagen", guidance, {"stage I": base.data_range, "stage II": sr.data_range})
    factor = sr.sample_size // base.sample_size
    load = {k: v for k, v in (("variant", variant), ("dtype", dtype)) if v is not None}
    comp = lambda name, **o: {"name": name, "options": o}  # noqa: E731
    components = {
        "tokenizer": comp("imagen.t5_tokenizer", folder=str(t5_dir / "tokenizer")),
        "text_encoder": comp("imagen.t5_encoder", folder=str(t5_dir / "text_encoder"), **load),
        "base": comp("imagen.if_unet", checkpoint=str(base_dir), **load),
        "sr": comp("imagen.if_unet", checkpoint=str(sr_dir), **load),
        "decoder": comp("imagen.pixels"),
    }
    guidance = guidance or "dynamic"
    defaults = {**IF_DEFAULTS, "width": sr.sample_size, "height": sr.sample_size}
    defaults.update(guidance=guidance, sr_guidance=guidance)
    if guidance == "dynamic":  # the folders' own percentile (0.95) and sample_max_value
        defaults.update(guidance_options=base.thresholding, sr_guidance_options=sr.thresholding)
    defaults = stage_defaults("imagen", defaults, sr_options)
    return cascade_recipe(
        components=components,
        base_size=base.sample_size,
        factor=factor,
        defaults=defaults,
        description=f"DeepFloyd IF cascade ({base.sample_size} -> {sr.sample_size} px)",
        model_name=base_dir.name,
        model_hash=short_hash(weight_files(base_dir / "unet", variant)[0]),
        infotext={"SR model": sr_dir.name},
    )


def create_t5_tokenizer(*, folder: str | os.PathLike):
    """Factory of ``imagen.t5_tokenizer``."""
    from t2i_imagen.t5 import T5Tokenizer

    return T5Tokenizer(folder)


def _torch_dtype(dtype: str | None):
    import torch

    return None if dtype is None else getattr(torch, dtype)


def create_t5_encoder(
    *, folder: str | os.PathLike, variant: str | None = None, dtype: str | None = None
):
    """Factory of ``imagen.t5_encoder``: the frozen T5 of an IF folder."""
    from t2i_imagen.t5 import T5TextEncoder

    return T5TextEncoder.from_folder(folder, dtype=_torch_dtype(dtype), variant=variant)


def create_if_denoiser(
    *, checkpoint: str | os.PathLike, variant: str | None = None, dtype: str | None = None
):
    """Factory of ``imagen.if_unet``: an IF stage's UNet as an :class:`ImagenDenoiser`."""
    from t2i.diffusion.schedules import get_alphas_cumprod
    from t2i_imagen.denoiser import IFPredictor, ImagenDenoiser
    from t2i_imagen.if_folder import load_unet, read_stage

    stage = read_stage(checkpoint)
    unet = load_unet(stage, variant=variant, dtype=_torch_dtype(dtype))
    sched = stage.scheduler
    alphas = get_alphas_cumprod(
        sched.get("beta_schedule", "squaredcos_cap_v2"),
        int(sched.get("num_train_timesteps", 1000)),
    )
    return ImagenDenoiser(
        IFPredictor(unet),
        unet,
        sched.get("prediction_type", "epsilon"),
        super_resolution=stage.stage == "II",
        alphas_cumprod=alphas,
        text_width=stage.unet.text_width,
        quantize=True,
    )
