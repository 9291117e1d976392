"""Reading ControlNet weights in the layouts users hold, for the UNet they will steer.

- lllyasviel's / A1111's files (``control_v11p_sd15_canny.pth`` / ``.safetensors``, their
  fp16 re-saves): CompVis keys under ``control_model.`` (or bare), our module paths;
- diffusers' ``ControlNetModel`` (``controlnet_cond_embedding.*``, ``down_blocks.*``,
  ``controlnet_down_blocks.N``, ``controlnet_mid_block``): a ``save_pretrained`` folder
  (``config.json`` + ``diffusion_pytorch_model.safetensors``) or its weights file alone,
  whose shapes are read off its keys.

The shapes (widths, levels, blocks, attention, context width) come from the file; what a file
does not store (heads, GroupNorm groups, attention upcast) comes from the UNet the ControlNet
steers, and a ControlNet made for another model (SD 2.x for an SD 1.5 checkpoint, SDXL for
SD 1.5 and back) is refused before its weights are read, naming both. SDXL ControlNets carry
the UNet's ``label_emb`` (diffusers' ``add_embedding``); their Fourier width comes from the
UNet too.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import attrs
import torch

from t2i.checkpoints import CheckpointError, CheckpointReader, load_into, open_checkpoint
from t2i_ldm.config import UNetConfig
from t2i_ldm.controlnet import ControlNetModel

FIT_FIELDS = (
    "model_channels",
    "channel_mult",
    "num_res_blocks",
    "attention_resolutions",
    "depths",
    "context_dim",
    "use_linear_projection",
    "adm_in_channels",
)
"""The UNet shapes a ControlNet must share with the UNet it steers."""
_FIX = "use a ControlNet made for this checkpoint's model (SD 1.x or SD 2.x, like the checkpoint)"


@attrs.frozen
class ControlNetShapes:
    """What a ControlNet file's keys say: its UNet-encoder config and the hint stack."""

    config: UNetConfig
    hint_channels: int
    embedding_channels: tuple[int, ...]


def _shape(reader: CheckpointReader, key: str) -> tuple[int, ...]:
    if key not in reader:
        raise CheckpointError(
            f"ControlNet keys are incomplete: {key!r} is missing",
            path=reader.path,
            missing=[key],
            fix="the file is truncated or not a ControlNet",
        )
    return tuple(reader.shape(key))


def _indices(keys: list[str], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def _hint_stack(reader: CheckpointReader, prefix: str, convs: list[int]) -> tuple[int, tuple]:
    """``(hint channels, embedding widths)`` from the hint stack's conv weights in order."""
    shapes = [_shape(reader, f"{prefix}{i}.weight") for i in convs]
    if len(shapes) < 4 or len(shapes) % 2:
        raise CheckpointError(
            f"the control image's embedding has {len(shapes)} convolutions, not 2 per width",
            path=reader.path,
            fix="the file is corrupt or not a ControlNet",
        )
    widths = (shapes[0][0], *(s[0] for s in shapes[2:-1:2]))
    return shapes[0][1], tuple(widths)


def compvis_shapes(reader: CheckpointReader, template: UNetConfig) -> ControlNetShapes:
    """The shapes of a CompVis-keyed ControlNet (``control_model.`` stripped)."""
    from t2i_ldm.checkpoint import _infer_unet_config

    convs = _indices(reader.keys(), r"input_hint_block\.(\d+)\.weight")
    hint, widths = _hint_stack(reader, "input_hint_block.", convs)
    config = _infer_unet_config(reader, template, encoder_only=True)
    return ControlNetShapes(config, hint, widths)


def diffusers_shapes(reader: CheckpointReader, template: UNetConfig) -> ControlNetShapes:
    """The shapes of a diffusers-keyed ControlNet weights file (no ``config.json``)."""
    keys = reader.keys()
    levels = _indices(keys, r"down_blocks\.(\d+)\.")
    n_res = len(_indices(keys, r"down_blocks\.0\.resnets\.(\d+)\."))
    widths = [_shape(reader, f"down_blocks.{i}.resnets.0.conv2.weight")[0] for i in levels]
    attn = [i for i in levels if f"down_blocks.{i}.attentions.0.proj_in.weight" in reader]

    def depth(prefix: str) -> int:
        return len(_indices(keys, rf"{re.escape(prefix)}transformer_blocks\.(\d+)\."))

    mid = "mid_block.attentions.0."
    depths = [depth(f"down_blocks.{i}.attentions.0.") if i in attn else depth(mid) for i in levels]
    cfg = {
        "block_out_channels": widths,
        "layers_per_block": n_res,
        "down_block_types": [
            "CrossAttnDownBlock2D" if i in attn else "DownBlock2D" for i in levels
        ],
        "cross_attention_dim": _shape(reader, f"{mid}transformer_blocks.0.attn2.to_k.weight")[1],
        "use_linear_projection": len(_shape(reader, f"{mid}proj_in.weight")) == 2,
        "transformer_layers_per_block": depths,
        "in_channels": _shape(reader, "conv_in.weight")[1],
    }
    if "add_embedding.linear_1.weight" in reader:  # SDXL's text_time micro-conditioning
        cfg["addition_embed_type"] = "text_time"
        cfg["addition_time_embed_dim"] = template.micro_embed_dim
        cfg["projection_class_embeddings_input_dim"] = _shape(
            reader, "add_embedding.linear_1.weight"
        )[1]
    config = _diffusers_unet_config(cfg, template)
    blocks = _indices(keys, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    convs = ["conv_in", *(f"blocks.{i}" for i in blocks), "conv_out"]
    hint, emb = _hint_stack(reader, "controlnet_cond_embedding.", list(convs))
    return ControlNetShapes(config, hint, emb)


def _diffusers_unet_config(cfg: dict[str, Any], template: UNetConfig) -> UNetConfig:
    """Our config of a diffusers ControlNet ``config.json`` dict (its up blocks mirror the
    down blocks), heads from ``template`` when the dict has none."""
    from t2i_ldm.diffusers_format import unet_config_from_diffusers

    down = list(cfg.get("down_block_types") or [])
    up = [t.replace("Down", "Up") for t in reversed(down)]
    heads = {} if "attention_head_dim" in cfg or "num_attention_heads" in cfg else _heads(template)
    known = {k: v for k, v in cfg.items() if not k.startswith("_") and k in _DIFFUSERS_KEYS}
    known.setdefault("norm_num_groups", template.norm_groups)  # a weights file has none
    found = unet_config_from_diffusers({**known, **heads, "up_block_types": up})
    return attrs.evolve(
        found, norm_groups=template.norm_groups, micro_embed_dim=template.micro_embed_dim
    )


_DIFFUSERS_KEYS = {
    "in_channels", "block_out_channels", "down_block_types", "layers_per_block",
    "cross_attention_dim", "attention_head_dim", "num_attention_heads", "use_linear_projection",
    "transformer_layers_per_block", "upcast_attention", "norm_num_groups",
    "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
}  # fmt: skip
"""The ``ControlNetModel`` config keys that describe its UNet encoder."""


def _heads(template: UNetConfig) -> dict[str, Any]:
    """diffusers' head option for ``template``'s heads (a file does not store them)."""
    if template.head_dim:
        widths = [template.level_channels(i) for i in range(template.num_levels)]
        return {"attention_head_dim": [w // template.head_dim for w in widths]}
    return {"attention_head_dim": template.num_heads}


def _fit_shape(c: UNetConfig) -> dict[str, Any]:
    """The :data:`FIT_FIELDS` of ``c``, ``depths`` the transformer depth of each level that
    has attention, then the middle block's (a level without one has no depth to match)."""
    out = {f: getattr(c, f) for f in FIT_FIELDS if f != "depths"}
    levels = [c.depth_at(level) for level in range(c.num_levels) if c.has_attention(level)]
    return {**out, "depths": (*levels, c.middle_depth)}


def check_fits(found: UNetConfig, unet: UNetConfig, path: Any) -> UNetConfig:
    """The ControlNet's config (the UNet's heads, groups, upcast; the file's shapes), or a
    :class:`CheckpointError` when its shapes are not the UNet's."""
    if found.in_channels != unet.out_channels:
        raise CheckpointError(
            f"this ControlNet reads {found.in_channels}-channel latents; the checkpoint's UNet "
            f"makes {unet.out_channels}-channel ones",
            path=path,
            fix=_FIX,
        )
    mine, theirs = _fit_shape(found), _fit_shape(unet)
    differ = [f for f in FIT_FIELDS if mine[f] != theirs[f]]
    if differ:
        said = ", ".join(f"{f} {mine[f]} vs {theirs[f]}" for f in differ)
        raise CheckpointError(
            f"this ControlNet was made for another model than the checkpoint's UNet "
            f"(ControlNet vs UNet: {said})",
            path=path,
            fix=_FIX,
        )
    return attrs.evolve(unet, in_channels=found.in_channels, out_channels=found.in_channels)


def _diffusers_key_map(model: ControlNetModel) -> dict[str, str]:
    """``{our key: diffusers key}`` for every key of ``model``."""
    from t2i_ldm.keymaps import unet_key_map

    keys = list(model.state_dict())
    own = ("input_hint_block.", "zero_convs.", "middle_block_out.")
    mapping = unet_key_map(model.config, [k for k in keys if not k.startswith(own)])
    convs = sorted({int(k.split(".")[1]) for k in keys if k.startswith("input_hint_block.")})
    names = ["conv_in", *(f"blocks.{i}" for i in range(len(convs) - 2)), "conv_out"]
    for index, name in zip(convs, names):
        for leaf in ("weight", "bias"):
            mapping[f"input_hint_block.{index}.{leaf}"] = f"controlnet_cond_embedding.{name}.{leaf}"
    for key in keys:
        if key.startswith("zero_convs."):
            i, leaf = key.split(".")[1], key.rsplit(".", 1)[1]
            mapping[key] = f"controlnet_down_blocks.{i}.{leaf}"
        elif key.startswith("middle_block_out."):
            mapping[key] = f"controlnet_mid_block.{key.rsplit('.', 1)[1]}"
    return mapping


def save_controlnet(path: str | os.PathLike, model: ControlNetModel) -> Path:
    """Write ``model`` as lllyasviel's / A1111's layout (``control_model.`` keys,
    safetensors): the file A1111's ControlNet extension and ComfyUI load."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {f"control_model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path


def weights_file(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(weights file, diffusers config.json or None)`` of a ControlNet file or folder."""
    path = Path(path)
    if path.is_file():
        beside = path.with_name("config.json")
        return path, (beside if beside.is_file() else None)
    if not path.is_dir():
        raise CheckpointError("no such ControlNet file or folder", path=path, fix="check the path")
    from t2i_ldm.diffusers_format import find_weights

    try:
        return find_weights(path, "unet"), path / "config.json"
    except CheckpointError:
        raise CheckpointError(
            "the folder holds no ControlNet weights",
            path=path,
            fix="pass a ControlNet .safetensors / .pth file or a diffusers ControlNet folder "
            "(config.json + diffusion_pytorch_model.safetensors)",
        ) from None


def _layout(reader: CheckpointReader) -> tuple[str, CheckpointReader]:
    """``("compvis" | "diffusers", reader of the ControlNet's own keys)``."""
    from t2i_ldm.checkpoint import prefixed_view

    keys = reader.keys()
    if "difference" in reader or "lora_controlnet" in reader:
        kind = "a difference" if "difference" in reader else "a Control-LoRA"
        what = f"{kind} ControlNet (weights relative to its base model) is not supported"
    elif any(k.startswith("control_model.") for k in keys):
        return "compvis", prefixed_view(reader, "control_model.")
    elif "input_hint_block.0.weight" in reader:
        return "compvis", reader
    elif "controlnet_cond_embedding.conv_in.weight" in reader:
        return "diffusers", reader
    else:
        what = "not a ControlNet: expected control_model.input_hint_block.* (lllyasviel / "
        what += "A1111) or controlnet_cond_embedding.* (diffusers) keys"
    raise CheckpointError(
        what,
        path=reader.path,
        fix="give a ControlNet file (e.g. control_v11p_sd15_canny.safetensors) or folder",
    )


def read_shapes(
    reader: CheckpointReader, unet: UNetConfig, config_json: Path | None
) -> tuple[str, CheckpointReader, ControlNetShapes]:
    """The file's layout, its ControlNet keys and the shapes they give."""
    layout, own = _layout(reader)
    if layout == "compvis":
        return layout, own, compvis_shapes(own, unet)
    if config_json is None:
        return layout, own, diffusers_shapes(own, unet)
    from t2i_ldm.diffusers_format import _read_json

    cfg = _read_json(config_json)
    shapes = diffusers_shapes(own, unet)
    try:
        config = _diffusers_unet_config(cfg, unet)
    except CheckpointError as exc:
        raise exc.located(config_json) from exc
    return layout, own, attrs.evolve(shapes, config=config)


def load_controlnet(
    path: str | os.PathLike,
    unet: UNetConfig,
    *,
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> ControlNetModel:
    """The ControlNet of ``path`` (file or diffusers folder) for a UNet of config ``unet``,
    read once per file while it is unchanged.

    Raises:
        CheckpointError: no such file, not a ControlNet, one made for another model, or
            weights that do not fit (every missing / mis-shaped key named).
    """
    file, config_json = weights_file(path)
    dtype = dtype or torch.float32
    st = file.stat()
    stamp = (st.st_mtime_ns, st.st_size, config_json is not None)
    return _load_cached(str(file.resolve()), stamp, config_json, unet, dtype, allow_pickle)


@functools.lru_cache(maxsize=2)
def _load_cached(file: str, stamp: tuple, config_json, unet, dtype, allow_pickle: bool):
    with open_checkpoint(file, allow_pickle=allow_pickle) as reader:
        layout, own, shapes = read_shapes(reader, unet, config_json)
        config = check_fits(shapes.config, unet, file)
        with torch.device("meta"):
            model = ControlNetModel(config, shapes.hint_channels, shapes.embedding_channels)
        key_map = _diffusers_key_map(model) if layout == "diffusers" else None
        load_into(
            model,
            own,
            key_map=key_map,
            dtype=dtype,
            what="ControlNet",
            fix="the file is truncated or not a ControlNet for this model",
        )
    return model.eval()
