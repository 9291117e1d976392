"""Single-file Stable Diffusion checkpoints in the CompVis / A1111 layout.

One flat dict (``.safetensors``; ``.ckpt`` pickles only with ``allow_pickle=True``):

- ``model.diffusion_model.*``: the UNet, in our parameter names (no remapping);
- ``first_stage_model.*``: the KL VAE, in our parameter names;
- ``cond_stage_model.transformer.*`` (SD1, HF ``CLIPTextModel`` keys) or
  ``cond_stage_model.model.*`` (SD2, OpenCLIP keys): handed back raw for the text encoder;
- ``model_ema.*``: optional EMA copy of the UNet with dots removed from the names
  (``model_ema.diffusion_modelinput_blocks00weight``). Like A1111 we load the non-EMA
  ``model.diffusion_model`` weights by default ("EMA-only" releases already store the EMA
  weights there); ``use_ema=True`` takes the ``model_ema`` copy instead;
- DDPM buffers (``betas``, ``alphas_cumprod`` ...), ignored: the schedule comes from the
  variant.

The variant (SD1 / SD2-512-eps / SD2-768-v) is detected from keys and shapes
(``shared/reference/architectures.md`` section 3.1): the cross-attention context width
(768: SD1, 1024: SD2) and the text-encoder keys. SD2 prediction type, in order: the
``prediction_type=`` argument, the file's ``prediction_type`` metadata, an A1111-style
``<name>.yaml`` next to the file (``parameterization: "v"``), ``global_step == 875000``
(SD2-base, epsilon), else v-prediction (the 768-v convention), with a warning.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import structlog
import torch

from t2i.checkpoints import (
    CheckpointError,
    CheckpointReader,
    checked_shape,
    load_into,
    open_checkpoint,
)
from t2i.checkpoints import save_safetensors as _save_safetensors
from t2i_ldm.config import (
    PREDICTION_TYPES,
    SD1_UNET,
    SD2_UNET,
    SD_VAE,
    LdmConfig,
    UNetConfig,
    VAEConfig,
)
from t2i_ldm.unet import UNetModel
from t2i_ldm.vae import AutoencoderKL

log = structlog.get_logger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."
EMA_PREFIX = "model_ema."
CLIP_PREFIX = "cond_stage_model.transformer."
OPENCLIP_PREFIX = "cond_stage_model.model."
DDPM_BUFFERS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "logvar",
        "model_ema.decay",
        "model_ema.num_updates",
    }
)
META_UNET = "t2i_ldm.unet_config"
META_VAE = "t2i_ldm.vae_config"
META_PREDICTION = "prediction_type"


def prefixed_view(reader: CheckpointReader, prefix: str) -> CheckpointReader:
    """The keys of ``reader`` that start with ``prefix``, with the prefix removed (lazy)."""
    keys = [k[len(prefix) :] for k in reader.keys() if k.startswith(prefix)]
    return CheckpointReader(
        keys,
        lambda k: reader.shape(prefix + k),
        lambda k: reader.dtype(prefix + k),
        lambda k: reader.get(prefix + k),
        path=reader.path,
        metadata=reader.metadata,
    )


@attrs.frozen
class Variant:
    """What :func:`detect_variant` found.

    Attributes:
        config: the whole-model configuration (UNet and VAE shapes, prediction type ...).
        text_encoder_format: "hf_clip" (HF ``CLIPTextModel`` keys ``text_model.*``),
            "open_clip" (OpenCLIP keys ``token_embedding``, ``transformer.resblocks.N`` ...),
            or None when the file has no text encoder.
        reason: how the prediction type was decided.
    """

    config: LdmConfig
    text_encoder_format: str | None
    reason: str


def _dims(reader: CheckpointReader, key: str, rank: int | tuple[int, ...], part: str):
    """The shape of ``key``: present, of rank ``rank``, every dimension >= 1."""
    if key not in reader:
        raise CheckpointError(
            f"{part} keys are incomplete: {key!r} is missing",
            path=reader.path,
            missing=[key],
            fix=f"the file is not a complete SD 1.x/2.x {part}",
        )
    return checked_shape(reader.shape(key), key, rank, what=part, path=reader.path)


def _multiple(width: int, base: int, key: str, reader: CheckpointReader, part: str) -> int:
    if width % base:
        raise CheckpointError(
            f"{part} tensor {key!r} is {width} wide, not a multiple of the first level's {base}",
            path=reader.path,
            fix="the file is corrupt or not an SD 1.x/2.x checkpoint",
        )
    return width // base


def _evolved(base: Any, part: str, reader: CheckpointReader, **fields: Any) -> Any:
    """``attrs.evolve(base, **fields)``; a configuration its validators refuse names the file."""
    try:
        return attrs.evolve(base, **fields)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(
            f"the {part} shapes in the file give an invalid configuration ({exc})",
            path=reader.path,
            fix=f"pass {part.lower()}_config= with the model's configuration, or use an "
            "intact checkpoint",
        ) from exc


def _block_indices(keys: list[str], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def _infer_unet_config(
    unet: CheckpointReader, base: UNetConfig, *, encoder_only: bool = False
) -> UNetConfig:
    """Read the UNet's shapes from its keys; heads and norm groups come from ``base``.
    ``encoder_only``: the keys hold the way down alone (a ControlNet's), no ``out``."""
    part = "ControlNet" if encoder_only else "UNet"
    mc, in_ch = _dims(unet, "input_blocks.0.0.weight", 4, part)[:2]
    out_ch = in_ch if encoder_only else _dims(unet, "out.2.weight", 4, part)[0]
    ctx = _dims(unet, "middle_block.1.transformer_blocks.0.attn2.to_k.weight", 2, part)[1]
    linear = len(_dims(unet, "middle_block.1.proj_in.weight", (2, 4), part)) == 2
    keys = unet.keys()
    blocks = _block_indices(keys, r"input_blocks\.(\d+)\.")
    downs = [i for i in blocks if f"input_blocks.{i}.0.op.weight" in unet]
    levels = len(downs) + 1
    n_res = len(blocks) // levels - 1
    if blocks != list(range(len(blocks))) or n_res < 1 or len(blocks) != levels * (n_res + 1):
        raise CheckpointError(
            f"UNet input blocks {blocks[:12]} do not form {levels} levels of residual blocks",
            path=unet.path,
            fix="the file is corrupt or not an SD 1.x/2.x checkpoint",
        )

    def depth_of(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in keys if k.startswith(prefix)})

    middle = depth_of("middle_block.1.transformer_blocks.")
    mult, attn, depths = [], [], []
    idx = 1
    for level in range(levels):
        key = f"input_blocks.{idx}.0.out_layers.3.weight"
        mult.append(_multiple(_dims(unet, key, 4, part)[0], mc, key, unet, part))
        if f"input_blocks.{idx}.1.norm.weight" in unet:
            attn.append(2**level)
            depths.append(depth_of(f"input_blocks.{idx}.1.transformer_blocks."))
        else:  # unused at this level; the last level's is the middle block's (SDXL refiner)
            depths.append(middle)
        idx += n_res + 1
    depths[-1] = middle
    adm = _dims(unet, "label_emb.0.0.weight", 2, part)[1] if "label_emb.0.0.weight" in unet else 0
    return _evolved(
        base,
        part,
        unet,
        in_channels=in_ch,
        out_channels=out_ch,
        model_channels=mc,
        channel_mult=tuple(mult),
        num_res_blocks=n_res,
        attention_resolutions=tuple(attn),
        transformer_depth=depths[0] if len(set(depths)) == 1 else tuple(depths),
        adm_in_channels=adm,
        context_dim=ctx,
        use_linear_projection=linear,
    )


def _infer_vae_config(vae: CheckpointReader, base: VAEConfig) -> VAEConfig:
    part = "VAE"
    ch, in_ch = _dims(vae, "encoder.conv_in.weight", 4, part)[:2]
    out_ch = _dims(vae, "decoder.conv_out.weight", 4, part)[0]
    z = _dims(vae, "decoder.conv_in.weight", 4, part)[1]
    embed = _dims(vae, "post_quant_conv.weight", 4, part)[1]
    keys = vae.keys()
    levels = len(_block_indices(keys, r"encoder\.down\.(\d+)\."))
    n_res = len(_block_indices(keys, r"encoder\.down\.0\.block\.(\d+)\."))
    mult = []
    for i in range(levels):
        key = f"encoder.down.{i}.block.0.conv1.weight"
        mult.append(_multiple(_dims(vae, key, 4, part)[0], ch, key, vae, part))
    return _evolved(
        base,
        part,
        vae,
        in_channels=in_ch,
        out_channels=out_ch,
        base_channels=ch,
        channel_mult=tuple(mult),
        num_res_blocks=n_res,
        z_channels=z,
        embed_dim=embed,
    )


_MAX_LEVELS, _MAX_BLOCKS = 16, 64
"""Bounds on a configuration read from metadata (SD: 4 levels, 2 blocks, depth 1), so a
hostile file cannot ask for a model that takes minutes to build."""


def _meta_config(metadata: dict[str, Any], key: str, cls: type, path: str | None) -> Any:
    """A configuration stored in the file's metadata (JSON text), or None when absent.

    Raises:
        CheckpointError: the entry is not a JSON object of ``cls``'s fields with valid,
            bounded values.
    """
    raw = metadata.get(key)
    if raw is None:
        return None
    fix = f"re-save the file with t2i_ldm.checkpoint.save_single_file, or remove {key!r}"
    try:
        fields = json.loads(raw) if isinstance(raw, str) else raw
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"metadata {key!r} is not valid JSON ({exc})", path=path, fix=fix
        ) from None
    names = {f.name for f in attrs.fields(cls)}
    if not isinstance(fields, dict) or not set(fields) <= names:
        unknown = sorted(map(str, set(fields) - names)) if isinstance(fields, dict) else []
        raise CheckpointError(
            f"metadata {key!r} must be a JSON object of {cls.__name__} fields"
            + (f"; unknown: {', '.join(unknown[:8])}" if unknown else ""),
            path=path,
            fix=fix,
        )
    fields = dict(fields)
    for name in ("channel_mult", "attention_resolutions", "num_heads"):
        if isinstance(fields.get(name), list):
            fields[name] = tuple(fields[name])
    try:
        config = cls(**fields)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(
            f"metadata {key!r} holds an invalid {cls.__name__}: {exc}", path=path, fix=fix
        ) from None
    depth = getattr(config, "transformer_depth", 1)
    blocks = (config.num_res_blocks, *(depth if isinstance(depth, tuple) else (depth,)))
    if len(config.channel_mult) > _MAX_LEVELS or max(blocks) > _MAX_BLOCKS:
        raise CheckpointError(
            f"metadata {key!r} asks for {len(config.channel_mult)} levels of "
            f"{max(blocks)} blocks; the limits are {_MAX_LEVELS} and {_MAX_BLOCKS}",
            path=path,
            fix=fix,
        )
    return config


def _global_step(reader: CheckpointReader) -> int | None:
    """The file's ``global_step`` as an int, or None (absent or not an integer: ignored)."""
    step = reader.metadata.get("global_step")
    if isinstance(step, bool) or step is None:
        return None
    if isinstance(step, int):
        return step
    if isinstance(step, str) and step.strip().isdigit():
        return int(step)
    log.warning("ignoring a global_step that is not an integer", path=reader.path)
    return None


def _sd2_prediction(reader: CheckpointReader, yaml_path: Path | None) -> tuple[str, str]:
    if yaml_path is not None and yaml_path.is_file():
        text = yaml_path.read_text(errors="replace")
        if re.search(r"parameterization:\s*[\"']?v[\"']?\s*$", text, re.MULTILINE):
            return "v_prediction", f"{yaml_path.name} sets parameterization: v"
        return "epsilon", f"{yaml_path.name} has no v parameterization"
    if _global_step(reader) == 875000:
        return "epsilon", "global_step 875000 (SD2-base)"
    log.warning(
        "SD2 checkpoint without a prediction type: assuming v-prediction (768-v); pass "
        "prediction_type='epsilon' for 512 base models",
        path=reader.path,
    )
    return "v_prediction", "SD2 default (768-v convention)"


def detect_variant(
    reader: CheckpointReader,
    *,
    prediction_type: str | None = None,
    unet_config: UNetConfig | None = None,
    vae_config: VAEConfig | None = None,
    yaml_path: Path | None = None,
) -> Variant:
    """Work out the model variant of a CompVis-layout checkpoint from its keys and shapes.

    Raises:
        CheckpointError: not a Stable Diffusion 1.x/2.x checkpoint.
    """
    keys = reader.keys()
    from t2i_ldm.sdxl import is_sdxl

    if is_sdxl(keys):
        raise CheckpointError(
            "an SDXL checkpoint, not SD 1.x/2.x (it is SDXL: t2i_ldm.loader.load_ldm, "
            "load_single_file and the ldm recipe load it through t2i_ldm.sdxl)",
            path=reader.path,
            fix="load it with t2i_ldm.sdxl.load_sdxl_reader or load_single_file",
        )
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        hint = ""
        if any(k.startswith("conditioner.embedders") for k in keys):
            hint = " (it is SDXL: t2i_ldm.loader.load_ldm and the ldm recipe load it)"
        elif any(k.startswith(("down_blocks.", "unet.")) for k in keys):
            hint = " (it looks like diffusers naming: load the diffusers folder instead)"
        raise CheckpointError(
            f"not a Stable Diffusion 1.x/2.x single-file checkpoint{hint}: no "
            f"'{UNET_PREFIX}*' keys among {len(keys)} keys",
            path=reader.path,
            unexpected=keys,
            fix="pass a CompVis/A1111 SD checkpoint, or use the loader of its own family",
        )
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
        )
    unet = prefixed_view(reader, UNET_PREFIX)
    meta_unet = _meta_config(reader.metadata, META_UNET, UNetConfig, reader.path)
    meta_vae = _meta_config(reader.metadata, META_VAE, VAEConfig, reader.path)
    ctx = _dims(unet, "middle_block.1.transformer_blocks.0.attn2.to_k.weight", 2, "UNet")[1]
    has_openclip = any(k.startswith(OPENCLIP_PREFIX) for k in keys)
    has_clip = any(k.startswith(CLIP_PREFIX) for k in keys)
    sd2 = has_openclip or ctx == 1024
    base_unet = unet_config or meta_unet or (SD2_UNET if sd2 else SD1_UNET)
    if unet_config is None and meta_unet is None and ctx not in (768, 1024):
        raise CheckpointError(
            f"UNet context width {ctx} is neither SD1 (768) nor SD2 (1024), and the file "
            "carries no t2i_ldm.unet_config metadata: the attention heads are unknown",
            path=reader.path,
            fix="pass unet_config= with the model's UNetConfig",
        )
    ucfg = _infer_unet_config(unet, base_unet)
    vae_view = prefixed_view(reader, VAE_PREFIX)
    vcfg = (
        _infer_vae_config(vae_view, vae_config or meta_vae or SD_VAE)
        if len(vae_view)
        else (vae_config or meta_vae or SD_VAE)
    )
    if prediction_type is not None:
        pred, reason = prediction_type, "prediction_type argument"
    elif reader.metadata.get(META_PREDICTION) in PREDICTION_TYPES:
        pred, reason = reader.metadata[META_PREDICTION], "file metadata"
    elif sd2:
        pred, reason = _sd2_prediction(reader, yaml_path)
    else:
        pred, reason = "epsilon", "SD1"
    if sd2:
        name = "sd2-768-v" if pred == "v_prediction" else "sd2-512-eps"
    else:
        name = "sd1"
    if meta_unet is not None or unet_config is not None:
        name = str(reader.metadata.get("t2i_ldm.name", "custom"))
    text_format = "open_clip" if has_openclip else ("hf_clip" if has_clip else None)
    config = LdmConfig(
        name,
        ucfg,
        vcfg,
        pred,
        "openclip_h" if sd2 else "clip_l",
        768 if name == "sd2-768-v" else 512,
    )
    return Variant(config, text_format, reason)


def split_checkpoint(
    state: CheckpointReader | dict[str, torch.Tensor],
    *,
    prediction_type: str | None = None,
    use_ema: bool = False,
    unet_config: UNetConfig | None = None,
    vae_config: VAEConfig | None = None,
    yaml_path: Path | None = None,
) -> dict[str, Any]:
    """Split a CompVis-layout checkpoint into its parts (lazy views, nothing read yet).

    Returns:
        ``{"unet": reader, "vae": reader, "text_encoder": reader | None, "variant":
        Variant}``. ``unet``/``vae`` keys are our parameter names; ``text_encoder`` keys
        are HF ``CLIPTextModel`` names (``text_model.*``, SD1, prefix
        ``cond_stage_model.transformer.`` removed) or OpenCLIP names (SD2, prefix
        ``cond_stage_model.model.`` removed); ``variant.text_encoder_format`` says which.
    """
    reader = (
        state if isinstance(state, CheckpointReader) else CheckpointReader.from_state_dict(state)
    )
    variant = detect_variant(
        reader,
        prediction_type=prediction_type,
        unet_config=unet_config,
        vae_config=vae_config,
        yaml_path=yaml_path,
    )
    unet = prefixed_view(reader, UNET_PREFIX)
    if use_ema:
        ema_names = {k: "diffusion_model" + k.replace(".", "") for k in unet.keys()}
        ema = prefixed_view(reader, EMA_PREFIX)
        absent = [v for v in ema_names.values() if v not in ema]
        if absent:
            raise CheckpointError(
                "use_ema=True but the file has no complete model_ema copy",
                path=reader.path,
                missing=[EMA_PREFIX + a for a in absent],
                fix="load with use_ema=False (EMA-only releases keep EMA weights in "
                "model.diffusion_model)",
            )
        unet = CheckpointReader(
            list(ema_names),
            lambda k: ema.shape(ema_names[k]),
            lambda k: ema.dtype(ema_names[k]),
            lambda k: ema.get(ema_names[k]),
            path=reader.path,
        )
    text = None
    if variant.text_encoder_format == "hf_clip":
        text = prefixed_view(reader, CLIP_PREFIX)
    elif variant.text_encoder_format == "open_clip":
        text = prefixed_view(reader, OPENCLIP_PREFIX)
    known = (UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX, EMA_PREFIX)
    other = [k for k in reader.keys() if not k.startswith(known) and k not in DDPM_BUFFERS]
    if other:
        log.warning("ignoring keys outside the SD layout", count=len(other), first=other[:5])
    return {
        "unet": unet,
        "vae": prefixed_view(reader, VAE_PREFIX),
        "text_encoder": text,
        "variant": variant,
    }


@attrs.frozen(eq=False)
class LdmModels:
    """Loaded latent diffusion weights.

    Attributes:
        unet: the UNet (eval mode).
        vae: the autoencoder (eval mode), or None when the source has none.
        text_encoder: raw text-encoder tensors as a lazy reader (see :func:`split_checkpoint`
            for the key format), or None.
        text_encoder_format: "hf_clip", "open_clip" or None.
        config: the detected variant's configuration.
        extras: source-specific data (a diffusers folder's tokenizer path and configs).
    """

    unet: UNetModel
    vae: AutoencoderKL | None
    text_encoder: CheckpointReader | None
    text_encoder_format: str | None
    config: LdmConfig
    extras: dict[str, Any] = attrs.field(factory=dict)


def build_on_meta(cls: type, config: Any) -> Any:
    """Instantiate ``cls(config)`` on the ``meta`` device (no memory, no init work)."""
    with torch.device("meta"):
        return cls(config)


def load_single_file(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    prediction_type: str | None = None,
    use_ema: bool = False,
    allow_pickle: bool = False,
    unet_config: UNetConfig | None = None,
    vae_config: VAEConfig | None = None,
) -> LdmModels:
    """Load a CompVis/A1111 single-file SD 1.x/2.x checkpoint, streaming tensor by tensor;
    an SDXL file (``conditioner.embedders.*`` keys) goes to :mod:`t2i_ldm.sdxl`.

    Args:
        path: ``.safetensors`` (or ``.ckpt``/``.pt`` with ``allow_pickle``).
        dtype: model dtype (default float32; fp16 files are upcast).
        device: where the weights go (default CPU).
        prediction_type: "epsilon" or "v_prediction", overriding detection.
        use_ema: load the ``model_ema`` UNet copy instead of ``model.diffusion_model``.
        allow_pickle: permit pickle files (read with ``torch.load(weights_only=True)``).
        unet_config, vae_config: override the heads / norm groups the keys cannot tell.

    Raises:
        CheckpointError: unreadable file, wrong family, or missing/unexpected/mis-shaped keys.
    """
    path = Path(path)
    reader = open_checkpoint(path, allow_pickle=allow_pickle)
    from t2i_ldm import sdxl

    if sdxl.is_sdxl(reader.keys()):  # the variant follows from the keys, before any load
        return sdxl.load_sdxl_reader(
            reader,
            dtype=dtype,
            device=device,
            prediction_type=prediction_type,
            use_ema=use_ema,
            unet_config=unet_config,
            vae_config=vae_config,
        )
    parts = split_checkpoint(
        reader,
        prediction_type=prediction_type,
        use_ema=use_ema,
        unet_config=unet_config,
        vae_config=vae_config,
        yaml_path=path.with_suffix(".yaml"),
    )
    variant: Variant = parts["variant"]
    cfg = variant.config
    dtype = dtype or torch.float32
    unet = build_on_meta(UNetModel, cfg.unet)
    load_into(
        unet,
        parts["unet"],
        dtype=dtype,
        device=device,
        what="UNet",
        fix="the file's UNet does not match the detected variant "
        f"{cfg.name!r}; pass unet_config= or a matching checkpoint",
    )
    vae = None
    if len(parts["vae"]):
        vae = build_on_meta(AutoencoderKL, cfg.vae)
        load_into(vae, parts["vae"], dtype=dtype, device=device, what="VAE")
        vae.eval()
    log.info(
        "loaded single-file checkpoint",
        path=str(path),
        variant=cfg.name,
        prediction_type=cfg.prediction_type,
        reason=variant.reason,
        ema=use_ema,
    )
    return LdmModels(unet.eval(), vae, parts["text_encoder"], variant.text_encoder_format, cfg)


def _config_json(cfg: Any) -> str:
    return json.dumps(attrs.asdict(cfg))


def single_file_state(
    unet: UNetModel,
    vae: AutoencoderKL | None = None,
    text_encoder: dict[str, torch.Tensor] | None = None,
    text_encoder_format: str = "hf_clip",
) -> dict[str, torch.Tensor]:
    """The CompVis-layout dict of our models (the inverse of :func:`split_checkpoint`)."""
    state = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    if vae is not None:
        state.update({VAE_PREFIX + k: v for k, v in vae.state_dict().items()})
    if text_encoder:
        prefix = CLIP_PREFIX if text_encoder_format == "hf_clip" else OPENCLIP_PREFIX
        state.update({prefix + k: v for k, v in text_encoder.items()})
    return state


def save_single_file(
    path: str | os.PathLike,
    unet: UNetModel,
    vae: AutoencoderKL | None = None,
    *,
    text_encoder: dict[str, torch.Tensor] | None = None,
    text_encoder_format: str = "hf_clip",
    prediction_type: str | None = None,
    name: str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a CompVis-layout ``.safetensors`` with our configs in its metadata.

    The metadata (``t2i_ldm.unet_config``, ``t2i_ldm.vae_config``, ``prediction_type``)
    lets :func:`load_single_file` rebuild non-SD shapes (tiny or custom models) exactly.
    """
    state = single_file_state(unet, vae, text_encoder, text_encoder_format)
    return save_with_configs(path, state, unet, vae, prediction_type, name, dtype)


def save_with_configs(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    unet: UNetModel,
    vae: AutoencoderKL | None,
    prediction_type: str | None,
    name: str | None,
    dtype: torch.dtype | None,
) -> Path:
    """Write ``state`` (cast to ``dtype``) with our UNet / VAE configs, the prediction type
    and the name in the safetensors metadata (what :func:`load_single_file` reads back)."""
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    meta = {META_UNET: _config_json(unet.config)}
    if vae is not None:
        meta[META_VAE] = _config_json(vae.config)
    if prediction_type is not None:
        meta[META_PREDICTION] = prediction_type
    if name is not None:
        meta["t2i_ldm.name"] = name
    return _save_safetensors(state, path, metadata=meta)


def _infer_diffusers_vae_config(
    reader: CheckpointReader, vae_keys: list[str], base: VAEConfig
) -> VAEConfig:
    """A standalone VAE's configuration from its diffusers-named keys (``conv_in``,
    ``conv_out`` and ``post_quant_conv`` are named as in CompVis files)."""
    part = "VAE"
    ch, in_ch = _dims(reader, "encoder.conv_in.weight", 4, part)[:2]
    out_ch = _dims(reader, "decoder.conv_out.weight", 4, part)[0]
    z = _dims(reader, "decoder.conv_in.weight", 4, part)[1]
    quant = "post_quant_conv.weight"  # absent from SD3 / Flux VAEs: refused later, by size
    embed = _dims(reader, quant, 4, part)[1] if quant in reader.keys() else z
    levels = len(_block_indices(vae_keys, r"encoder\.down_blocks\.(\d+)\."))
    n_res = len(_block_indices(vae_keys, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."))
    mult = []
    for i in range(levels):
        key = f"encoder.down_blocks.{i}.resnets.0.conv1.weight"
        mult.append(_multiple(_dims(reader, key, 4, part)[0], ch, key, reader, part))
    return _evolved(
        base,
        part,
        reader,
        in_channels=in_ch,
        out_channels=out_ch,
        base_channels=ch,
        channel_mult=tuple(mult),
        num_res_blocks=n_res,
        z_channels=z,
        embed_dim=embed,
    )


def load_vae_file(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_pickle: bool = False,
    vae_config: VAEConfig | None = None,
    check: Callable[[VAEConfig], None] | None = None,
) -> AutoencoderKL:
    """Load a standalone VAE file (e.g. ``vae-ft-mse-840000-ema-pruned.safetensors``).

    Keys may be CompVis names, bare (``encoder.down.0...``) or prefixed with
    ``first_stage_model.`` or ``vae.``, or diffusers names (``encoder.down_blocks.0...``),
    which go through the asserted :func:`t2i_ldm.keymaps.vae_key_map`. ``vae_config`` gives
    what the file does not store (scaling factor, groups, upcast); ``check`` sees the
    inferred config before any weight is read (and may raise).
    """
    from t2i_ldm.keymaps import vae_key_map

    reader = open_checkpoint(path, allow_pickle=allow_pickle)
    for prefix in (VAE_PREFIX, "vae."):
        if any(k.startswith(prefix + "encoder.") for k in reader.keys()):
            reader = prefixed_view(reader, prefix)
            break
    vae_keys = [
        k
        for k in reader.keys()
        if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))
    ]
    if not vae_keys:
        raise CheckpointError(
            "not a KL VAE file: no encoder./decoder. keys",
            path=reader.path,
            unexpected=reader.keys()[:20],
            fix="pass an SD VAE (.safetensors) file",
        )
    diffusers_names = any(".down_blocks." in k for k in vae_keys)
    if diffusers_names:
        cfg = _infer_diffusers_vae_config(reader, vae_keys, vae_config or SD_VAE)
    else:
        cfg = _infer_vae_config(reader, vae_config or SD_VAE)
    if check is not None:
        check(cfg)
    vae = build_on_meta(AutoencoderKL, cfg)
    key_map = vae_key_map(cfg, vae.state_dict().keys()) if diffusers_names else None
    load_into(
        vae,
        reader,
        key_map=key_map,
        source_keys=vae_keys,
        dtype=dtype or torch.float32,
        device=device,
        reshape_1x1=diffusers_names,
        what="VAE",
    )
    ignored = len(reader) - len(vae_keys)
    if ignored:
        log.info("ignored non-VAE keys in VAE file", count=ignored)
    return vae.eval()
