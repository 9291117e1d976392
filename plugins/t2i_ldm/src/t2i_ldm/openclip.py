"""SD2's OpenCLIP ViT-H/14 text tower, converted into a transformers ``CLIPTextModel``.

Stable Diffusion 2.x conditions on ``FrozenOpenCLIPEmbedder(arch="ViT-H-14",
layer="penultimate")``: the text tower of OpenCLIP (Ilharco et al., 2021; Cherti et al., 2023,
arXiv 2212.07143) run up to block 23 of 24, then ``ln_final``. Its weights sit in single-file
checkpoints under ``cond_stage_model.model.``::

    token_embedding.weight                          (V, W)
    positional_embedding                            (77, W)
    transformer.resblocks.N.ln_1.{weight,bias}      pre-attention LayerNorm
    transformer.resblocks.N.attn.in_proj_{weight,bias}   packed q, k, v: (3W, W), (3W,)
    transformer.resblocks.N.attn.out_proj.{weight,bias}
    transformer.resblocks.N.ln_2.{weight,bias}      pre-MLP LayerNorm
    transformer.resblocks.N.mlp.c_fc.{weight,bias}  W -> 4W, exact GELU
    transformer.resblocks.N.mlp.c_proj.{weight,bias}
    ln_final.{weight,bias}
    text_projection                                 (W, E), unused by SD2

That block is the same computation as a ``CLIPTextModel`` layer (pre-LN residual attention with a
causal mask, then a pre-LN MLP) with ``hidden_act="gelu"``, so :func:`convert_openclip_text`
maps every key explicitly (and asserts it accounted for all of them) and keeps the first
``layers_used`` blocks: with 23 of 24, the model's ``last_hidden_state`` (after
``final_layer_norm`` = ``ln_final``) is exactly SD2's "penultimate" conditioning, and
:class:`t2i_ldm.text_encoder.ClipTextEncoder` runs it like SD1's encoder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import structlog
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from t2i.checkpoints import CheckpointError, checked_shape

log = structlog.get_logger(__name__)

OPENCLIP_PREFIX = "cond_stage_model.model."
"""Where SD2 single-file checkpoints keep the OpenCLIP text tower."""

_BLOCK_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_BLOCK_RENAMES = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_PACKED = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}
_TOP_RENAMES = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_UNUSED_TOP = ("text_projection", "logit_scale")
"""Present in SD2 checkpoints, not part of the conditioning path."""


class OpenClipConversionError(CheckpointError, ValueError):
    """The OpenCLIP state dict does not have the expected keys or shapes."""


def _shape(state_dict: Mapping[str, torch.Tensor], key: str, rank: int) -> tuple[int, ...]:
    if key not in state_dict:
        raise OpenClipConversionError(f"OpenCLIP text tower: {key!r} is missing")
    return checked_shape(
        state_dict[key].shape, key, rank, what="OpenCLIP text", error=OpenClipConversionError
    )


def strip_openclip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the keys under ``cond_stage_model.model.`` (prefix removed); unprefixed dicts pass."""
    if any(k.startswith(OPENCLIP_PREFIX) for k in state_dict):
        n = len(OPENCLIP_PREFIX)
        return {k[n:]: v for k, v in state_dict.items() if k.startswith(OPENCLIP_PREFIX)}
    return dict(state_dict)


def is_openclip_text_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for an OpenCLIP text tower, with or without the ``cond_stage_model.model.`` prefix."""
    keys = strip_openclip_prefix(state_dict).keys()
    return "token_embedding.weight" in keys and "positional_embedding" in keys


def openclip_text_config(
    state_dict: Mapping[str, torch.Tensor], *, layers_used: int | None = None, head_dim: int = 64
) -> CLIPTextConfig:
    """The ``CLIPTextConfig`` matching an (unprefixed) OpenCLIP text state dict.

    Args:
        state_dict: OpenCLIP text-tower keys, prefix stripped.
        layers_used: blocks to keep; None keeps all but the last (SD2's "penultimate").
        head_dim: width per attention head (64 in every OpenCLIP ViT; ViT-H/14: 16 heads).
    """
    vocab_size, width = _shape(state_dict, "token_embedding.weight", 2)
    context = _shape(state_dict, "positional_embedding", 2)[0]
    n_blocks = _count_blocks(state_dict)
    layers_used = n_blocks - 1 if layers_used is None else layers_used
    if not 1 <= layers_used <= n_blocks:
        raise OpenClipConversionError(
            f"layers_used must be in [1, {n_blocks}] for this {n_blocks}-block model, "
            f"got {layers_used}"
        )
    if width % head_dim:
        raise OpenClipConversionError(f"width {width} is not a multiple of head_dim {head_dim}")
    intermediate = _shape(state_dict, "transformer.resblocks.0.mlp.c_fc.weight", 2)[0]
    projection = state_dict.get("text_projection")
    if projection is not None:
        _shape(state_dict, "text_projection", 2)
    return CLIPTextConfig(
        vocab_size=int(vocab_size),
        hidden_size=int(width),
        intermediate_size=int(intermediate),
        num_hidden_layers=int(layers_used),
        num_attention_heads=int(width // head_dim),
        max_position_embeddings=int(context),
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=int(projection.shape[1]) if projection is not None else int(width),
        bos_token_id=int(vocab_size) - 2,
        eos_token_id=int(vocab_size) - 1,
        pad_token_id=0,
    )


def _count_blocks(state_dict: Mapping[str, torch.Tensor]) -> int:
    indices = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.fullmatch(k))}
    if not indices:
        raise OpenClipConversionError(
            "no 'transformer.resblocks.N.*' keys: not an OpenCLIP text tower"
        )
    if indices != set(range(len(indices))):
        raise OpenClipConversionError(f"resblocks are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def convert_openclip_text(
    state_dict: Mapping[str, torch.Tensor],
    *,
    layers_used: int | None = None,
    head_dim: int = 64,
) -> tuple[dict[str, torch.Tensor], CLIPTextConfig]:
    """Map an OpenCLIP text tower onto ``CLIPTextModel`` keys, accounting for every key.

    Args:
        state_dict: the tower, with or without the ``cond_stage_model.model.`` prefix (other
            prefixes of a full checkpoint are ignored when that prefix is present).
        layers_used: blocks to keep; None = all but the last (SD2).
        head_dim: attention head width.

    Returns:
        ``(hf_state_dict, config)`` for ``CLIPTextModel(config).load_state_dict(hf_state_dict)``.
        Blocks past ``layers_used``, ``text_projection`` and ``logit_scale`` are dropped.

    Raises:
        OpenClipConversionError: unknown, missing or mis-shaped keys (all of them listed).
    """
    source = strip_openclip_prefix(state_dict)
    if not is_openclip_text_state_dict(source):
        raise OpenClipConversionError(
            "not an OpenCLIP text tower: 'token_embedding.weight' and 'positional_embedding' "
            f"are required (under '{OPENCLIP_PREFIX}' in an SD2 checkpoint)"
        )
    config = openclip_text_config(source, layers_used=layers_used, head_dim=head_dim)
    width = config.hidden_size
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    unknown: list[str] = []
    for key, value in source.items():
        if key in _TOP_RENAMES:
            out[_TOP_RENAMES[key]] = value
            used.add(key)
            continue
        if key in _UNUSED_TOP:
            used.add(key)
            continue
        match = _BLOCK_KEY.fullmatch(key)
        if match is None:
            unknown.append(key)
            continue
        block, name = int(match.group(1)), match.group(2)
        if name not in _BLOCK_RENAMES and name not in _PACKED:
            unknown.append(key)
            continue
        used.add(key)
        if block >= config.num_hidden_layers:
            continue  # SD2 drops the last block
        target = f"text_model.encoder.layers.{block}."
        if name in _PACKED:
            if value.dim() < 1 or value.shape[0] != 3 * width:
                raise OpenClipConversionError(
                    f"{key} has shape {tuple(value.shape)}; expected first dimension 3*{width}"
                )
            q, k, v = value.chunk(3, dim=0)  # packed (3W, ...) -> three (W, ...)
            suffix = _PACKED[name]
            out[target + f"self_attn.q_proj.{suffix}"] = q
            out[target + f"self_attn.k_proj.{suffix}"] = k
            out[target + f"self_attn.v_proj.{suffix}"] = v
        else:
            out[target + _BLOCK_RENAMES[name]] = value
    if unknown:
        raise OpenClipConversionError(f"unknown OpenCLIP text keys: {sorted(unknown)}")
    assert used == set(source), "every source key must be converted or dropped explicitly"
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(out))
    wrong = sorted(k for k in out if k in expected and tuple(out[k].shape) != expected[k])
    if missing or wrong:
        details = [f"missing {k}" for k in missing]
        details += [f"{k}: {tuple(out[k].shape)} != {expected[k]}" for k in wrong]
        raise OpenClipConversionError("OpenCLIP text tower does not fit: " + "; ".join(details))
    assert set(out) == set(expected), "the conversion must produce exactly the model's keys"
    log.debug("openclip.converted", blocks=config.num_hidden_layers, width=width)
    return out, config


def _expected_shapes(config: CLIPTextConfig) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of ``CLIPTextModel(config)`` under checkpoint (``text_model.*``) keys."""
    with torch.device("meta"):
        model = CLIPTextModel(config)
    prefix = "text_model." if hasattr(model, "text_model") else ""
    shapes = {
        "text_model." + k[len(prefix) :]: tuple(v.shape) for k, v in model.state_dict().items()
    }
    shapes.pop("text_model.embeddings.position_ids", None)  # a buffer the model builds itself
    return shapes


def load_openclip_text_model(
    state_dict: Mapping[str, torch.Tensor],
    *,
    layers_used: int | None = None,
    head_dim: int = 64,
    dtype: torch.dtype | None = None,
) -> CLIPTextModel:
    """Build a ``CLIPTextModel`` holding an OpenCLIP text tower (see :func:`convert_openclip_text`).

    The weights are copied as they are (``dtype`` None keeps theirs); the model is in eval mode.
    """
    from t2i_ldm.text_encoder import build_clip_text_model  # text_encoder imports this module

    weights, config = convert_openclip_text(state_dict, layers_used=layers_used, head_dim=head_dim)
    return build_clip_text_model(weights, config, dtype=dtype)
