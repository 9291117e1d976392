"""Loading the diffusers folder layout of Stable Diffusion 1.x / 2.x.

A ``StableDiffusionPipeline.save_pretrained`` folder holds ``model_index.json`` and one
subfolder per component: ``unet/`` and ``vae/`` (``config.json`` +
``diffusion_pytorch_model[.fp16].safetensors`` or ``.bin``), ``text_encoder/``
(``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``), ``tokenizer/`` and
``scheduler/scheduler_config.json``. Configs are translated to ours (unsupported options
raise), and weights go through the explicit, asserted key maps of :mod:`t2i_ldm.keymaps`:
every model key is found and every file key is used, or :class:`CheckpointError` lists
the difference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import structlog
import torch

from t2i.checkpoints import CheckpointError, CheckpointReader, load_into, open_checkpoint
from t2i_ldm.checkpoint import LdmModels, build_on_meta
from t2i_ldm.config import PREDICTION_TYPES, LdmConfig, NoiseScheduleConfig, UNetConfig, VAEConfig
from t2i_ldm.keymaps import LEGACY_VAE_ATTENTION, unet_key_map, vae_key_map
from t2i_ldm.unet import UNetModel
from t2i_ldm.vae import AutoencoderKL

log = structlog.get_logger(__name__)

WEIGHT_NAMES = {
    "unet": ("diffusion_pytorch_model", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model", "pytorch_model.bin"),
}

# diffusers UNet2DConditionModel options and the only values we implement
_UNET_FIXED = {
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "act_fn": "silu",
    "norm_eps": 1e-5,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "resnet_time_scale_shift": "default",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "dual_cross_attention": False,
    "only_cross_attention": False,
    "class_embed_type": None,
    "encoder_hid_dim": None,
    "time_cond_proj_dim": None,
    "num_class_embeds": None,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "attention_type": "default",
    "class_embeddings_concat": False,
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "mid_block_only_cross_attention": None,
    "cross_attention_norm": None,
    "dropout": 0.0,
    "reverse_transformer_layers_per_block": None,
}
_VAE_FIXED = {
    "act_fn": "silu",
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
}


def _check_fixed(cfg: dict[str, Any], fixed: dict[str, Any], what: str) -> None:
    for key, want in fixed.items():
        if key in cfg and cfg[key] != want:
            if (
                isinstance(want, float)
                and isinstance(cfg[key], (int, float))
                and abs(cfg[key] - want) < 1e-12
            ):
                continue
            raise CheckpointError(
                f"unsupported diffusers {what} option {key}={cfg[key]!r} (t2i_ldm implements "
                f"{key}={want!r}, the SD 1.x/2.x value)",
                fix="this model is not an SD 1.x/2.x variant; use its own family's loader",
            )


def _bad(what: str, key: str, value: Any, expected: str) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return CheckpointError(
        f"diffusers {what} option {key}={shown} is invalid: expected {expected}",
        fix=f"fix {key} in the {what} config.json (a save_pretrained folder has valid values)",
    )


def _int(cfg: dict[str, Any], key: str, default: int, what: str, minimum: int = 1) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(what, key, value, f"an integer >= {minimum}")
    return value


def _number(cfg: dict[str, Any], key: str, default: float, what: str) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _bad(what, key, value, "a number")
    return float(value)


def _ints(cfg: dict[str, Any], key: str, default: Any, what: str) -> list[int]:
    """A positive int, or a non-empty list of them."""
    value = cfg.get(key, default)
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
        raise _bad(what, key, value, "a positive integer or a list of them")
    return list(items)


def _names(cfg: dict[str, Any], key: str, what: str) -> list[str]:
    value = cfg.get(key, ())
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _bad(what, key, value, "a list of block type names")
    return list(value)


def _per_level(cfg: dict[str, Any], key: str, default: Any, n: int) -> list[int]:
    values = _ints(cfg, key, default, "UNet")
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise CheckpointError(f"diffusers UNet {key} has {len(values)} entries for {n} blocks")
    return values


def unet_config_from_diffusers(cfg: dict[str, Any]) -> UNetConfig:
    """Translate a diffusers ``UNet2DConditionModel`` ``config.json`` dict to ours.

    diffusers' ``attention_head_dim`` is the head *count* (diffusers issue #2011) unless
    ``num_attention_heads`` is set; ``block_out_channels`` gives ``model_channels`` and
    ``channel_mult``; blocks named ``CrossAttn*`` carry transformers.

    Raises:
        CheckpointError: an option of the wrong type or value, or one t2i_ldm does not
            implement (naming the option).
    """
    _check_fixed(cfg, _UNET_FIXED, "UNet")
    widths = _ints(cfg, "block_out_channels", [320, 640, 1280, 1280], "UNet")
    n = len(widths)
    mc = widths[0]
    if any(w % mc for w in widths):
        raise CheckpointError(f"block_out_channels {widths} are not multiples of the first")
    down, up = _names(cfg, "down_block_types", "UNet"), _names(cfg, "up_block_types", "UNet")
    if len(down) != n or len(up) != n:
        raise CheckpointError("diffusers UNet block types do not match block_out_channels")
    attn = [t.startswith("CrossAttn") for t in down]
    for t in down + up:
        if t not in ("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"):
            raise CheckpointError(f"unsupported diffusers UNet block {t!r}")
    if [t.startswith("CrossAttn") for t in reversed(up)] != attn:
        raise CheckpointError("diffusers UNet up blocks do not mirror the down blocks")
    heads_key = "num_attention_heads" if cfg.get("num_attention_heads") else "attention_head_dim"
    heads = _per_level(cfg, heads_key, 8, n)
    layers = set(_per_level(cfg, "layers_per_block", 2, n))
    depths = _per_level(cfg, "transformer_layers_per_block", 1, n)
    if len(layers) != 1:
        raise CheckpointError("per-block layers_per_block is not supported")
    head_dims = {w // h for w, h in zip(widths, heads)}
    if len(set(heads)) == 1:
        head_kw: dict[str, Any] = {"num_heads": heads[0]}
    elif len(head_dims) == 1 and all(w % h == 0 for w, h in zip(widths, heads)):
        head_kw = {"num_heads": None, "head_dim": head_dims.pop()}
    else:
        head_kw = {"num_heads": tuple(heads)}
    ctx = set(_ints(cfg, "cross_attention_dim", 768, "UNet"))
    if len(ctx) != 1:
        raise CheckpointError("per-block cross_attention_dim is not supported")
    return _config(
        UNetConfig,
        "UNet",
        in_channels=_int(cfg, "in_channels", 4, "UNet"),
        out_channels=_int(cfg, "out_channels", 4, "UNet"),
        model_channels=mc,
        channel_mult=tuple(w // mc for w in widths),
        num_res_blocks=layers.pop(),
        attention_resolutions=tuple(2**i for i, a in enumerate(attn) if a),
        transformer_depth=depths[0] if len(set(depths)) == 1 else tuple(depths),
        **_addition_embedding(cfg),
        context_dim=ctx.pop(),
        use_linear_projection=bool(cfg.get("use_linear_projection", False)),
        upcast_attention=bool(cfg.get("upcast_attention", False)),
        norm_groups=_int(cfg, "norm_num_groups", 32, "UNet"),
        **head_kw,
    )


def _addition_embedding(cfg: dict[str, Any]) -> dict[str, int]:
    """``adm_in_channels`` / ``micro_embed_dim`` of an SDXL UNet (``addition_embed_type=
    "text_time"``: pooled text + the Fourier features of the size / crop numbers)."""
    kind = cfg.get("addition_embed_type")
    if kind is None:
        return {}
    if kind != "text_time":
        raise CheckpointError(
            f"unsupported diffusers UNet option addition_embed_type={kind!r} (t2i_ldm "
            "implements None, SD 1.x/2.x, and 'text_time', SDXL)",
            fix="this model is not an SD 1.x/2.x/XL variant; use its own family's loader",
        )
    return {
        "adm_in_channels": _int(cfg, "projection_class_embeddings_input_dim", 2816, "UNet"),
        "micro_embed_dim": _int(cfg, "addition_time_embed_dim", 256, "UNet"),
    }


def _config(cls: type, what: str, **fields: Any) -> Any:
    """``cls(**fields)``; values its validators refuse become a :class:`CheckpointError`."""
    try:
        return cls(**fields)
    except ValueError as exc:
        raise CheckpointError(
            f"the diffusers {what} config gives an invalid configuration ({exc})",
            fix=f"fix the {what} config.json, or use an intact save_pretrained folder",
        ) from exc


def vae_config_from_diffusers(cfg: dict[str, Any]) -> VAEConfig:
    """Translate a diffusers ``AutoencoderKL`` ``config.json`` dict to ours.

    Raises:
        CheckpointError: an option of the wrong type or value, or an unsupported one.
    """
    _check_fixed(cfg, _VAE_FIXED, "VAE")
    widths = _ints(cfg, "block_out_channels", [64], "VAE")
    for t in _names(cfg, "down_block_types", "VAE"):
        if t != "DownEncoderBlock2D":
            raise CheckpointError(f"unsupported diffusers VAE block {t!r}")
    for t in _names(cfg, "up_block_types", "VAE"):
        if t != "UpDecoderBlock2D":
            raise CheckpointError(f"unsupported diffusers VAE block {t!r}")
    ch = widths[0]
    if any(w % ch for w in widths):
        raise CheckpointError(f"VAE block_out_channels {widths} are not multiples of the first")
    latent = _int(cfg, "latent_channels", 4, "VAE")
    return _config(
        VAEConfig,
        "VAE",
        in_channels=_int(cfg, "in_channels", 3, "VAE"),
        out_channels=_int(cfg, "out_channels", 3, "VAE"),
        base_channels=ch,
        channel_mult=tuple(w // ch for w in widths),
        num_res_blocks=_int(cfg, "layers_per_block", 1, "VAE"),
        z_channels=latent,
        embed_dim=latent,
        norm_groups=_int(cfg, "norm_num_groups", 32, "VAE"),
        scaling_factor=_number(cfg, "scaling_factor", 0.18215, "VAE"),
    )


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is a :class:`CheckpointError` naming it."""
    if not path.is_file():
        raise CheckpointError(
            "missing file",
            path=path,
            fix="pass a complete diffusers folder (save_pretrained output)",
        )
    fix = "restore the file from the model's save_pretrained folder"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"invalid JSON ({exc})", path=path, fix=fix) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read the file ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"must hold a JSON object, not {type(data).__name__}", path=path, fix=fix
        )
    return data


def find_weights(folder: Path, component: str, variant: str | None = None) -> Path:
    """The weight file of a component subfolder: safetensors first (``variant`` like "fp16"
    picks ``<name>.<variant>.safetensors``), then the pickle ``.bin``."""
    stem, pickle_name = WEIGHT_NAMES[component]
    candidates = []
    if variant:
        candidates.append(folder / f"{stem}.{variant}.safetensors")
    candidates += [folder / f"{stem}.safetensors", folder / f"{stem}.fp16.safetensors"]
    if variant:
        candidates.append(folder / pickle_name.replace(".bin", f".{variant}.bin"))
    candidates.append(folder / pickle_name)
    for c in candidates:
        if c.is_file():
            return c
    if (folder / f"{stem}.safetensors.index.json").is_file():
        raise CheckpointError(
            "sharded weights are not supported",
            path=folder,
            fix="merge the shards into one safetensors file",
        )
    raise CheckpointError(
        f"no weights found (looked for {', '.join(c.name for c in candidates)})",
        path=folder,
        fix="pass a complete diffusers folder",
    )


def _vae_source_keys(reader: CheckpointReader, key_map: dict[str, str]) -> dict[str, str]:
    """Use the legacy attention names (``query``/``key``/``value``/``proj_attn``) when the
    file has them instead of the current ones."""
    out = {}
    for ours, theirs in key_map.items():
        if theirs not in reader:
            for new, old in LEGACY_VAE_ATTENTION.items():
                legacy = theirs.replace(f".{new}", f".{old}")
                if f".{new}" in theirs and legacy in reader:
                    theirs = legacy
                    break
        out[ours] = theirs
    return out


def _hf_clip_keys(reader: CheckpointReader) -> CheckpointReader:
    """HF ``CLIPTextModel`` keys with the ``text_model.`` prefix (transformers >= 5 saves
    them without it; earlier versions and the published SD folders with it)."""
    if any(k.startswith("text_model.") for k in reader.keys()):
        return reader
    p = "text_model."
    return CheckpointReader(
        [p + k for k in reader.keys()],
        lambda k: reader.shape(k[len(p) :]),
        lambda k: reader.dtype(k[len(p) :]),
        lambda k: reader.get(k[len(p) :]),
        path=reader.path,
        metadata=reader.metadata,
    )


def load_diffusers_unet(
    folder: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_pickle: bool = False,
    variant: str | None = None,
) -> UNetModel:
    """Load ``folder`` (a diffusers ``unet/`` folder: ``config.json`` + weights) into our UNet."""
    folder = Path(folder)
    try:
        config = unet_config_from_diffusers(_read_json(folder / "config.json"))
    except CheckpointError as exc:
        raise exc.located(folder / "config.json") from exc
    model = build_on_meta(UNetModel, config)
    key_map = unet_key_map(config, model.state_dict().keys())
    with open_checkpoint(find_weights(folder, "unet", variant), allow_pickle=allow_pickle) as r:
        load_into(
            model,
            r,
            key_map=key_map,
            dtype=dtype or torch.float32,
            device=device,
            what="UNet",
            fix="the weights do not match unet/config.json",
        )
    return model.eval()


def load_diffusers_vae(
    folder: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_pickle: bool = False,
    variant: str | None = None,
) -> AutoencoderKL:
    """Load ``folder`` (a diffusers ``vae/`` folder) into our AutoencoderKL."""
    folder = Path(folder)
    try:
        config = vae_config_from_diffusers(_read_json(folder / "config.json"))
    except CheckpointError as exc:
        raise exc.located(folder / "config.json") from exc
    model = build_on_meta(AutoencoderKL, config)
    key_map = vae_key_map(config, model.state_dict().keys())
    with open_checkpoint(find_weights(folder, "vae", variant), allow_pickle=allow_pickle) as r:
        load_into(
            model,
            r,
            key_map=_vae_source_keys(r, key_map),
            dtype=dtype or torch.float32,
            device=device,
            reshape_1x1=True,
            what="VAE",
            fix="the weights do not match vae/config.json",
        )
    return model.eval()


def schedule_from_diffusers(cfg: dict[str, Any]) -> tuple[NoiseScheduleConfig, str]:
    """``scheduler_config.json`` -> (noise schedule, prediction type)."""
    kind = cfg.get("beta_schedule", "scaled_linear")
    if kind != "scaled_linear":
        raise CheckpointError(
            f"beta_schedule {kind!r} is not SD's scaled_linear",
            fix="edit scheduler/scheduler_config.json or use a matching model",
        )
    pred = cfg.get("prediction_type", "epsilon")
    if not isinstance(pred, str) or pred not in PREDICTION_TYPES:
        raise CheckpointError(f"prediction_type {pred!r} is not one of {PREDICTION_TYPES}")
    what = "scheduler"
    sched = NoiseScheduleConfig(
        _number(cfg, "beta_start", 0.00085, what),
        _number(cfg, "beta_end", 0.012, what),
        _int(cfg, "num_train_timesteps", 1000, what),
    )
    return sched, pred


def load_diffusers_folder(
    folder: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    prediction_type: str | None = None,
    allow_pickle: bool = False,
    variant: str | None = None,
) -> LdmModels:
    """Load a diffusers ``StableDiffusionPipeline`` folder (an SDXL one, with
    ``text_encoder_2/``, goes to :func:`t2i_ldm.sdxl.load_sdxl_diffusers_folder`).

    Returns:
        :class:`~t2i_ldm.checkpoint.LdmModels` with the UNet and VAE loaded, the raw
        ``text_encoder/`` tensors (HF ``CLIPTextModel`` keys, format "hf_clip") as a lazy
        reader, and ``extras`` = ``{"tokenizer_dir": Path | None, "text_encoder_config":
        dict | None, "model_index": dict}``.
    """
    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    from t2i_ldm import sdxl

    if sdxl.is_sdxl_folder(folder):
        return sdxl.load_sdxl_diffusers_folder(
            folder,
            dtype=dtype,
            device=device,
            prediction_type=prediction_type,
            allow_pickle=allow_pickle,
            variant=variant,
        )
    for part in ("unet", "vae"):
        if not (folder / part).is_dir():
            raise CheckpointError(
                f"no {part}/ subfolder", path=folder, fix="pass a complete diffusers SD folder"
            )
    unet = load_diffusers_unet(
        folder / "unet", dtype=dtype, device=device, allow_pickle=allow_pickle, variant=variant
    )
    vae = load_diffusers_vae(
        folder / "vae", dtype=dtype, device=device, allow_pickle=allow_pickle, variant=variant
    )
    schedule, pred = NoiseScheduleConfig(), "epsilon"
    scheduler = folder / "scheduler" / "scheduler_config.json"
    if scheduler.is_file():
        try:
            schedule, pred = schedule_from_diffusers(_read_json(scheduler))
        except CheckpointError as exc:
            raise exc.located(scheduler) from exc
    pred = prediction_type or pred
    text, text_cfg = None, None
    te = folder / "text_encoder"
    if te.is_dir():
        text = _hf_clip_keys(
            open_checkpoint(find_weights(te, "text_encoder", variant), allow_pickle=allow_pickle)
        )
        text_cfg = _read_json(te / "config.json") if (te / "config.json").is_file() else None
    sd2 = unet.config.context_dim == 1024
    name = ("sd2-768-v" if pred == "v_prediction" else "sd2-512-eps") if sd2 else "sd1"
    if unet.config.context_dim not in (768, 1024):
        name = "custom"
    config = LdmConfig(
        name,
        unet.config,
        vae.config,
        pred,
        "openclip_h" if sd2 else "clip_l",
        768 if name == "sd2-768-v" else 512,
        schedule,
    )
    tok = folder / "tokenizer"
    log.info("loaded diffusers folder", path=str(folder), variant=name, prediction_type=pred)
    return LdmModels(
        unet,
        vae,
        text,
        "hf_clip" if text is not None else None,
        config,
        {
            "tokenizer_dir": tok if tok.is_dir() else None,
            "text_encoder_config": text_cfg,
            "model_index": index,
        },
    )
