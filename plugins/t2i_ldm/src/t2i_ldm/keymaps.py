"""Explicit key maps between our (CompVis-layout) parameter names and diffusers' names.

Our modules use the CompVis names, so single files load directly; the diffusers folder
layout goes through these maps. Each map is built from the configuration by walking the
same construction loop as the model, so it names every parameter exactly once:
:func:`unet_key_map` and :func:`vae_key_map` return ``{our_key: diffusers_key}`` for every
key of the model's ``state_dict`` and raise if one is left unmapped.
(diffusers layout: ``UNet2DConditionModel`` / ``AutoencoderKL``; see
``shared/reference/architectures.md`` section 3.1 for the correspondence.)
"""

from __future__ import annotations

from collections.abc import Iterable

from t2i_ldm.config import UNetConfig, VAEConfig

_UNET_RESNET = {
    "in_layers.0.": "norm1.",
    "in_layers.2.": "conv1.",
    "emb_layers.1.": "time_emb_proj.",
    "out_layers.0.": "norm2.",
    "out_layers.3.": "conv2.",
    "skip_connection.": "conv_shortcut.",
}
_VAE_RESNET = {"nin_shortcut.": "conv_shortcut."}
_VAE_ATTN = {
    "norm.": "group_norm.",
    "q.": "to_q.",
    "k.": "to_k.",
    "v.": "to_v.",
    "proj_out.": "to_out.0.",
}


def _unet_prefixes(config: UNetConfig) -> list[tuple[str, str, dict[str, str] | None]]:
    """``(our_prefix, diffusers_prefix, sub-renames)`` for every UNet submodule."""
    c = config
    out: list[tuple[str, str, dict[str, str] | None]] = [
        ("time_embed.0.", "time_embedding.linear_1.", None),
        ("time_embed.2.", "time_embedding.linear_2.", None),
        ("input_blocks.0.0.", "conv_in.", None),
        ("out.0.", "conv_norm_out.", None),
        ("out.2.", "conv_out.", None),
        ("middle_block.0.", "mid_block.resnets.0.", _UNET_RESNET),
        ("middle_block.1.", "mid_block.attentions.0.", None),
        ("middle_block.2.", "mid_block.resnets.1.", _UNET_RESNET),
    ]
    if c.adm_in_channels:  # SDXL's label_emb is diffusers' add_embedding
        out += [
            ("label_emb.0.0.", "add_embedding.linear_1.", None),
            ("label_emb.0.2.", "add_embedding.linear_2.", None),
        ]
    idx = 1
    for level in range(c.num_levels):
        for layer in range(c.num_res_blocks):
            out.append(
                (f"input_blocks.{idx}.0.", f"down_blocks.{level}.resnets.{layer}.", _UNET_RESNET)
            )
            if c.has_attention(level):
                out.append(
                    (f"input_blocks.{idx}.1.", f"down_blocks.{level}.attentions.{layer}.", None)
                )
            idx += 1
        if level != c.num_levels - 1:
            out.append(
                (f"input_blocks.{idx}.0.op.", f"down_blocks.{level}.downsamplers.0.conv.", None)
            )
            idx += 1
    idx = 0
    for block, level in enumerate(reversed(range(c.num_levels))):
        for layer in range(c.num_res_blocks + 1):
            out.append(
                (f"output_blocks.{idx}.0.", f"up_blocks.{block}.resnets.{layer}.", _UNET_RESNET)
            )
            sub = 1
            if c.has_attention(level):
                out.append(
                    (f"output_blocks.{idx}.1.", f"up_blocks.{block}.attentions.{layer}.", None)
                )
                sub = 2
            if level and layer == c.num_res_blocks:
                out.append(
                    (
                        f"output_blocks.{idx}.{sub}.conv.",
                        f"up_blocks.{block}.upsamplers.0.conv.",
                        None,
                    )
                )
            idx += 1
    return out


def _vae_prefixes(config: VAEConfig) -> list[tuple[str, str, dict[str, str] | None]]:
    n = len(config.channel_mult)
    out: list[tuple[str, str, dict[str, str] | None]] = [
        ("quant_conv.", "quant_conv.", None),
        ("post_quant_conv.", "post_quant_conv.", None),
    ]
    for part in ("encoder", "decoder"):
        out += [
            (f"{part}.conv_in.", f"{part}.conv_in.", None),
            (f"{part}.conv_out.", f"{part}.conv_out.", None),
            (f"{part}.norm_out.", f"{part}.conv_norm_out.", None),
            (f"{part}.mid.block_1.", f"{part}.mid_block.resnets.0.", _VAE_RESNET),
            (f"{part}.mid.attn_1.", f"{part}.mid_block.attentions.0.", _VAE_ATTN),
            (f"{part}.mid.block_2.", f"{part}.mid_block.resnets.1.", _VAE_RESNET),
        ]
    for level in range(n):
        for j in range(config.num_res_blocks):
            out.append(
                (
                    f"encoder.down.{level}.block.{j}.",
                    f"encoder.down_blocks.{level}.resnets.{j}.",
                    _VAE_RESNET,
                )
            )
        if level != n - 1:
            out.append(
                (
                    f"encoder.down.{level}.downsample.conv.",
                    f"encoder.down_blocks.{level}.downsamplers.0.conv.",
                    None,
                )
            )
        up = n - 1 - level  # diffusers orders decoder blocks deepest first
        for j in range(config.num_res_blocks + 1):
            out.append(
                (
                    f"decoder.up.{level}.block.{j}.",
                    f"decoder.up_blocks.{up}.resnets.{j}.",
                    _VAE_RESNET,
                )
            )
        if level != 0:
            out.append(
                (
                    f"decoder.up.{level}.upsample.conv.",
                    f"decoder.up_blocks.{up}.upsamplers.0.conv.",
                    None,
                )
            )
    return out


def _build(
    keys: Iterable[str], prefixes: list[tuple[str, str, dict[str, str] | None]], what: str
) -> dict[str, str]:
    # longest prefix first, so "input_blocks.1.0." never shadows "input_blocks.10.0."
    ordered = sorted(prefixes, key=lambda p: len(p[0]), reverse=True)
    mapping: dict[str, str] = {}
    unmapped: list[str] = []
    for key in keys:
        for ours, theirs, renames in ordered:
            if key.startswith(ours):
                rest = key[len(ours) :]
                for a, b in (renames or {}).items():
                    if rest.startswith(a):
                        rest = b + rest[len(a) :]
                        break
                mapping[key] = theirs + rest
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise AssertionError(f"{what} key map leaves {len(unmapped)} keys unmapped: {unmapped[:8]}")
    if len(set(mapping.values())) != len(mapping):
        raise AssertionError(f"{what} key map sends two keys to the same diffusers key")
    return mapping


def unet_key_map(config: UNetConfig, keys: Iterable[str]) -> dict[str, str]:
    """``{our_key: diffusers_key}`` for the UNet keys ``keys`` (our model's state_dict keys)."""
    return _build(keys, _unet_prefixes(config), "UNet")


def vae_key_map(config: VAEConfig, keys: Iterable[str]) -> dict[str, str]:
    """``{our_key: diffusers_key}`` for the VAE keys ``keys`` (our model's state_dict keys).

    The mid-block attention ``q``/``k``/``v``/``proj_out`` are 1x1 convs here and Linear in
    diffusers: the loader reshapes ``(C, C)`` <-> ``(C, C, 1, 1)``.
    """
    return _build(keys, _vae_prefixes(config), "VAE")


LEGACY_VAE_ATTENTION = {
    "to_q.": "query.",
    "to_k.": "key.",
    "to_v.": "value.",
    "to_out.0.": "proj_attn.",
}
"""Old diffusers VAE attention names (before 0.14), accepted when the new ones are absent."""
