"""SDXL weights: A1111 / ComfyUI single files and diffusers folders (base and refiner).

Single files (``sd_xl_base_1.0.safetensors``, ``sd_xl_refiner_1.0.safetensors``) hold:

- ``model.diffusion_model.*``: the UNet in our parameter names (with ``label_emb.0.{0,2}``);
- ``first_stage_model.*``: the VAE (SD's shapes; scaling 0.13025);
- base: ``conditioner.embedders.0.transformer.*`` (CLIP ViT-L, HF ``CLIPTextModel`` keys)
  and ``conditioner.embedders.1.model.*`` (OpenCLIP ViT-bigG keys, ``text_projection``);
- refiner: ``conditioner.embedders.0.model.*`` (bigG alone).

A file is SDXL when it has ``conditioner.embedders.*`` keys or a UNet ``label_emb``: the
loaders of :mod:`t2i_ldm.checkpoint` and :mod:`t2i_ldm.diffusers_format` hand such files and
folders here, and :func:`detect_sdxl` refuses an SD 1.x/2.x file, so either path ends with
the right variant or a :class:`CheckpointError` before any weight is read. Base or refiner
follows from the text towers present and the context width (2048 / 1280).

Diffusers folders (``StableDiffusionXLPipeline`` / ``StableDiffusionXLImg2ImgPipeline``):
``unet/`` (``addition_embed_type="text_time"``), ``vae/`` (``force_upcast``),
``text_encoder/`` (CLIP-L; absent in the refiner), ``text_encoder_2/``
(``CLIPTextModelWithProjection``), ``tokenizer/``, ``tokenizer_2/``, ``scheduler/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import structlog
import torch

from t2i.checkpoints import CheckpointError, CheckpointReader, load_into, open_checkpoint
from t2i_ldm.checkpoint import (
    DDPM_BUFFERS,
    META_PREDICTION,
    META_UNET,
    META_VAE,
    UNET_PREFIX,
    VAE_PREFIX,
    LdmModels,
    Variant,
    _dims,
    _infer_unet_config,
    _infer_vae_config,
    _meta_config,
    build_on_meta,
    prefixed_view,
    save_with_configs,
)
from t2i_ldm.config import (
    PREDICTION_TYPES,
    SDXL_REFINER_UNET,
    SDXL_UNET,
    SDXL_VAE,
    LdmConfig,
    NoiseScheduleConfig,
    UNetConfig,
    VAEConfig,
)
from t2i_ldm.unet import UNetModel
from t2i_ldm.vae import AutoencoderKL

log = structlog.get_logger(__name__)

CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
"""CLIP ViT-L of an SDXL base file (HF ``CLIPTextModel`` keys ``text_model.*``)."""
BASE_G_PREFIX = "conditioner.embedders.1.model."
"""OpenCLIP ViT-bigG of an SDXL base file."""
REFINER_G_PREFIX = "conditioner.embedders.0.model."
"""OpenCLIP ViT-bigG of an SDXL refiner file."""
FORMAT = "sdxl"
"""``LdmModels.text_encoder_format`` of SDXL weights: ``text_encoder`` is CLIP-L (HF keys) or
None, ``extras["text_encoder_2"]`` bigG in ``extras["text_encoder_2_format"]`` keys
("open_clip" from single files, "hf_clip" from diffusers folders)."""


def is_sdxl(keys) -> bool:
    """True for an SDXL single file's keys (a ``conditioner.embedders`` or ``label_emb`` key)."""
    return any(
        k.startswith("conditioner.embedders.") or k.startswith(UNET_PREFIX + "label_emb.")
        for k in keys
    )


def _g_prefix(keys: list[str]) -> str | None:
    for prefix in (BASE_G_PREFIX, REFINER_G_PREFIX):
        if any(k.startswith(prefix) for k in keys):
            return prefix
    return None


def detect_sdxl(
    reader: CheckpointReader,
    *,
    prediction_type: str | None = None,
    unet_config: UNetConfig | None = None,
    vae_config: VAEConfig | None = None,
) -> Variant:
    """The SDXL variant (base / refiner) of a single file, from its keys and shapes.

    Raises:
        CheckpointError: not an SDXL file (an SD 1.x/2.x file names its own loader), or a
            UNet without SDXL's ``label_emb``.
    """
    keys = reader.keys()
    if not any(k.startswith(UNET_PREFIX) for k in keys) or not is_sdxl(keys):
        what = (
            "an SD 1.x/2.x checkpoint"
            if any(k.startswith(UNET_PREFIX) for k in keys)
            else ("not a Stable Diffusion checkpoint")
        )
        raise CheckpointError(
            f"{what}, not SDXL: no 'conditioner.embedders.*' / UNet 'label_emb' keys",
            path=reader.path,
            fix="load it with t2i_ldm.loader.load_ldm (or the ldm recipe's checkpoint=), which "
            "picks the variant; an SDXL refiner must be an SDXL file",
        )
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
        )
    unet = prefixed_view(reader, UNET_PREFIX)
    if "label_emb.0.0.weight" not in unet:
        raise CheckpointError(
            "SDXL text towers but a UNet without label_emb (SDXL's pooled-text and size "
            "embedding): the file mixes model families",
            path=reader.path,
            missing=[UNET_PREFIX + "label_emb.0.0.weight"],
            fix="use an intact SDXL checkpoint",
        )
    has_l = any(k.startswith(CLIP_L_PREFIX) for k in keys)
    g_prefix = _g_prefix(keys)
    ctx = _dims(unet, "middle_block.1.transformer_blocks.0.attn2.to_k.weight", 2, "UNet")[1]
    refiner = g_prefix == REFINER_G_PREFIX and not has_l if g_prefix else ctx == 1280
    meta_unet = _meta_config(reader.metadata, META_UNET, UNetConfig, reader.path)
    meta_vae = _meta_config(reader.metadata, META_VAE, VAEConfig, reader.path)
    base_unet = unet_config or meta_unet or (SDXL_REFINER_UNET if refiner else SDXL_UNET)
    ucfg = _infer_unet_config(unet, base_unet)
    vae_view = prefixed_view(reader, VAE_PREFIX)
    vbase = vae_config or meta_vae or SDXL_VAE
    vcfg = _infer_vae_config(vae_view, vbase) if len(vae_view) else vbase
    if prediction_type is not None:
        pred, reason = prediction_type, "prediction_type argument"
    elif reader.metadata.get(META_PREDICTION) in PREDICTION_TYPES:
        pred, reason = reader.metadata[META_PREDICTION], "file metadata"
    else:
        pred, reason = "epsilon", "SDXL"
    name = "sdxl-refiner" if refiner else "sdxl"
    if meta_unet is not None or unet_config is not None:
        name = str(reader.metadata.get("t2i_ldm.name", name))
    text = "openclip_g" if refiner else "clip_l+openclip_g"
    config = LdmConfig(name, ucfg, vcfg, pred, text, 1024)
    return Variant(config, FORMAT if g_prefix else None, reason)


def load_sdxl_reader(
    reader: CheckpointReader,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    prediction_type: str | None = None,
    use_ema: bool = False,
    unet_config: UNetConfig | None = None,
    vae_config: VAEConfig | None = None,
) -> LdmModels:
    """Load an opened SDXL single file (see :func:`load_sdxl_single_file`)."""
    variant = detect_sdxl(
        reader, prediction_type=prediction_type, unet_config=unet_config, vae_config=vae_config
    )
    if use_ema:
        raise CheckpointError(
            "use_ema=True, but SDXL files carry no model_ema copy",
            path=reader.path,
            fix="load with use_ema=False",
        )
    cfg = variant.config
    keys = reader.keys()
    known = (UNET_PREFIX, VAE_PREFIX, "conditioner.")
    other = [k for k in keys if not k.startswith(known) and k not in DDPM_BUFFERS]
    if other:
        log.warning("ignoring keys outside the SDXL layout", count=len(other), first=other[:5])
    dtype = dtype or torch.float32
    unet = build_on_meta(UNetModel, cfg.unet)
    load_into(
        unet,
        prefixed_view(reader, UNET_PREFIX),
        dtype=dtype,
        device=device,
        what="UNet",
        fix=f"the file's UNet does not match the detected variant {cfg.name!r}; pass "
        "unet_config= or a matching checkpoint",
    )
    vae = None
    vae_view = prefixed_view(reader, VAE_PREFIX)
    if len(vae_view):
        vae = build_on_meta(AutoencoderKL, cfg.vae)
        load_into(vae, vae_view, dtype=dtype, device=device, what="VAE")
        vae.eval()
    clip_l = prefixed_view(reader, CLIP_L_PREFIX)
    g_prefix = _g_prefix(keys)
    extras: dict[str, Any] = {}
    if g_prefix is not None:
        extras = {
            "text_encoder_2": prefixed_view(reader, g_prefix),
            "text_encoder_2_format": "open_clip",
        }
    log.info("loaded SDXL single file", path=str(reader.path), variant=cfg.name)
    return LdmModels(
        unet.eval(), vae, clip_l if len(clip_l) else None, variant.text_encoder_format, cfg, extras
    )


def load_sdxl_single_file(
    path: str | os.PathLike, *, allow_pickle: bool = False, **options: Any
) -> LdmModels:
    """Load an A1111 / ComfyUI SDXL base or refiner file, streaming tensor by tensor.

    Args:
        path: ``.safetensors`` (``.ckpt`` only with ``allow_pickle``).
        options: ``dtype``, ``device``, ``prediction_type``, ``unet_config``, ``vae_config``.

    Returns:
        :class:`~t2i_ldm.checkpoint.LdmModels`, ``text_encoder_format`` :data:`FORMAT`.

    Raises:
        CheckpointError: not SDXL, unreadable, or missing / unexpected / mis-shaped keys.
    """
    reader = open_checkpoint(path, allow_pickle=allow_pickle)
    return load_sdxl_reader(reader, **options)


def _canonical_text(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model's tensors under ``text_model.*`` keys."""
    out = {}
    for key, value in model.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key
        if not key.endswith("position_ids"):
            out[key] = value
    return out


def sdxl_single_file_state(
    unet: UNetModel,
    vae: AutoencoderKL | None = None,
    *,
    clip_l: torch.nn.Module | None = None,
    clip_g: torch.nn.Module | None = None,
    projection: torch.nn.Linear | None = None,
) -> dict[str, torch.Tensor]:
    """Our models in the A1111 SDXL layout (the inverse of :func:`load_sdxl_reader`)."""
    from t2i_ldm.sdxl_text import openclip_state_from_hf

    state = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    if vae is not None:
        state.update({VAE_PREFIX + k: v for k, v in vae.state_dict().items()})
    if clip_l is not None:
        state.update({CLIP_L_PREFIX + k: v for k, v in _canonical_text(clip_l).items()})
    if clip_g is not None:
        if projection is None:
            raise ValueError("clip_g needs its projection (the pooled output's text_projection)")
        prefix = BASE_G_PREFIX if clip_l is not None else REFINER_G_PREFIX
        g = openclip_state_from_hf(clip_g, projection)
        state.update({prefix + k: v for k, v in g.items()})
    return state


def save_sdxl_single_file(
    path: str | os.PathLike,
    unet: UNetModel,
    vae: AutoencoderKL | None = None,
    *,
    prediction_type: str | None = None,
    name: str | None = None,
    dtype: torch.dtype | None = None,
    **text: Any,
) -> Path:
    """Write an A1111-layout SDXL ``.safetensors`` (``text``: ``clip_l``, ``clip_g``,
    ``projection``) with our configs in its metadata, so tiny or custom shapes load exactly."""
    state = sdxl_single_file_state(unet, vae, **text)
    return save_with_configs(path, state, unet, vae, prediction_type, name, dtype)


# -- diffusers folders -----------------------------------------------------------------------


def is_sdxl_folder(folder: Path) -> bool:
    """A diffusers folder of SDXL: ``text_encoder_2/``, or an SDXL ``unet/config.json``."""
    from t2i_ldm.diffusers_format import _read_json

    if (folder / "text_encoder_2").is_dir():
        return True
    unet_cfg = folder / "unet" / "config.json"
    return unet_cfg.is_file() and _read_json(unet_cfg).get("addition_embed_type") == "text_time"


def _text_reader(folder: Path, variant: str | None, allow_pickle: bool):
    from t2i_ldm.diffusers_format import _hf_clip_keys, _read_json, find_weights

    if not folder.is_dir():
        return None, None
    weights = find_weights(folder, "text_encoder", variant)
    reader = _hf_clip_keys(open_checkpoint(weights, allow_pickle=allow_pickle))
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    return reader, config


def load_sdxl_diffusers_folder(
    folder: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    prediction_type: str | None = None,
    allow_pickle: bool = False,
    variant: str | None = None,
) -> LdmModels:
    """Load a diffusers ``StableDiffusionXLPipeline`` / ``...Img2ImgPipeline`` folder.

    Raises:
        CheckpointError: a missing part, a UNet without ``addition_embed_type="text_time"``,
            or weights that do not fit the configs.
    """
    from t2i_ldm.diffusers_format import (
        _read_json,
        load_diffusers_unet,
        load_diffusers_vae,
        schedule_from_diffusers,
    )

    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    for part in ("unet", "vae", "text_encoder_2"):
        if not (folder / part).is_dir():
            raise CheckpointError(
                f"no {part}/ subfolder", path=folder, fix="pass a complete diffusers SDXL folder"
            )
    unet_cfg = _read_json(folder / "unet" / "config.json")
    if unet_cfg.get("addition_embed_type") != "text_time":
        raise CheckpointError(
            "text_encoder_2/ but a UNet without addition_embed_type='text_time': not SDXL",
            path=folder / "unet" / "config.json",
            fix="pass an intact SDXL folder",
        )
    opts = {"dtype": dtype, "device": device, "allow_pickle": allow_pickle, "variant": variant}
    unet = load_diffusers_unet(folder / "unet", **opts)
    vae = load_diffusers_vae(folder / "vae", **opts)
    upcast = bool(_read_json(folder / "vae" / "config.json").get("force_upcast", True))
    vae.config = attrs.evolve(vae.config, force_upcast=upcast)
    schedule, pred = NoiseScheduleConfig(), "epsilon"
    scheduler = folder / "scheduler" / "scheduler_config.json"
    if scheduler.is_file():
        try:
            schedule, pred = schedule_from_diffusers(_read_json(scheduler))
        except CheckpointError as exc:
            raise exc.located(scheduler) from exc
    clip_l, l_cfg = _text_reader(folder / "text_encoder", variant, allow_pickle)
    clip_g, g_cfg = _text_reader(folder / "text_encoder_2", variant, allow_pickle)
    refiner = clip_l is None
    name = "sdxl-refiner" if refiner else "sdxl"
    text = "openclip_g" if refiner else "clip_l+openclip_g"
    config = LdmConfig(name, unet.config, vae.config, prediction_type or pred, text, 1024, schedule)
    tok = next((folder / t for t in ("tokenizer", "tokenizer_2") if (folder / t).is_dir()), None)
    log.info("loaded diffusers SDXL folder", path=str(folder), variant=name)
    extras = {
        "tokenizer_dir": tok,
        "text_encoder_config": l_cfg,
        "text_encoder_2": clip_g,
        "text_encoder_2_format": "hf_clip",
        "text_encoder_2_config": g_cfg,
        "model_index": index,
    }
    return LdmModels(unet, vae, clip_l, FORMAT, config, extras)
