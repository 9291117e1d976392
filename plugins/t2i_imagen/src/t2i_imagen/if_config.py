"""The DeepFloyd IF UNet's configuration (:class:`IFUNetConfig`), without the network.

Reading an IF folder's ``unet/config.json`` (:func:`t2i_imagen.if_folder.read_stage`, the
``imagen`` recipe's structural checks) needs only this module, so a deployment runtime that
builds the recipe never imports the torch network code of :mod:`t2i_imagen.if_unet`.
:class:`IFUNetConfig` reads the keys of a diffusers ``unet/config.json`` that IF uses and
refuses the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

DOWN_BLOCKS = ("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D")
UP_BLOCKS = ("ResnetUpsampleBlock2D", "SimpleCrossAttnUpBlock2D")
MID_BLOCK = "UNetMidBlock2DSimpleCrossAttn"


def _tuple(value: Any, n: int) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


@attrs.frozen
class IFUNetConfig:
    """The ``UNet2DConditionModel`` options IF's UNets set (diffusers' names and defaults)."""

    sample_size: int | None = 64
    in_channels: int = 3
    out_channels: int = 6
    down_block_types: tuple[str, ...] = DOWN_BLOCKS
    up_block_types: tuple[str, ...] = UP_BLOCKS
    mid_block_type: str = MID_BLOCK
    block_out_channels: tuple[int, ...] = (320, 640)
    layers_per_block: tuple[int, ...] | int = 2
    only_cross_attention: tuple[bool, ...] | bool = False
    mid_block_only_cross_attention: bool | None = None
    attention_head_dim: tuple[int, ...] | int = 64
    cross_attention_dim: int = 1280
    encoder_hid_dim: int | None = None
    addition_embed_type: str | None = "text"
    addition_embed_type_num_heads: int = 64
    class_embed_type: str | None = None
    act_fn: str = "gelu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    resnet_time_scale_shift: str = "scale_shift"
    resnet_skip_time_act: bool = False
    resnet_out_scale_factor: float = 1.0
    mid_block_scale_factor: float = 1.0
    time_embedding_dim: int | None = None
    time_embedding_act_fn: str | None = None
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    cross_attention_norm: str | None = "group_norm"

    @property
    def time_embed_dim(self) -> int:
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    @property
    def text_width(self) -> int:
        """Width of the text states the UNet reads (T5-XXL: 4096)."""
        return self.encoder_hid_dim or self.cross_attention_dim

    @property
    def super_resolution(self) -> bool:
        return self.class_embed_type == "timestep"

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> IFUNetConfig:
        """From a ``unet/config.json``; raises ValueError for options IF does not use."""
        names = {f.name for f in attrs.fields(cls)}
        unsupported = {
            "center_input_sample": False,
            "encoder_hid_dim_type": (None, "text_proj"),
            "class_embeddings_concat": False,
            "time_embedding_type": "positional",
            "num_class_embeds": None,
            "dual_cross_attention": False,
            "use_linear_projection": False,
            "upcast_attention": False,
            "timestep_post_act": None,
            "time_cond_proj_dim": None,
            "conv_in_kernel": 3,
            "conv_out_kernel": 3,
        }
        for key, allowed in unsupported.items():
            value = config.get(key, allowed if not isinstance(allowed, tuple) else allowed[0])
            ok = value in allowed if isinstance(allowed, tuple) else value == allowed
            if not ok:
                raise ValueError(f"unet config {key}={value!r} is not an IF UNet's (IF: {allowed})")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()
                  if k in names}  # fmt: skip
        made = cls(**kwargs)
        made.check()
        return made

    def check(self) -> None:
        n = len(self.block_out_channels)
        if (
            any(t not in DOWN_BLOCKS for t in self.down_block_types)
            or len(self.down_block_types) != n
        ):
            raise ValueError(f"down_block_types must be {n} of {DOWN_BLOCKS}")
        if any(t not in UP_BLOCKS for t in self.up_block_types) or len(self.up_block_types) != n:
            raise ValueError(f"up_block_types must be {n} of {UP_BLOCKS}")
        if self.mid_block_type != MID_BLOCK:
            raise ValueError(f"mid_block_type must be {MID_BLOCK}, got {self.mid_block_type!r}")
        if self.class_embed_type not in (None, "timestep"):
            raise ValueError(f"class_embed_type {self.class_embed_type!r}: IF uses 'timestep'")
        if self.addition_embed_type not in (None, "text"):
            raise ValueError(f"addition_embed_type {self.addition_embed_type!r}: IF uses 'text'")
        if self.resnet_time_scale_shift not in ("default", "scale_shift"):
            raise ValueError(f"resnet_time_scale_shift {self.resnet_time_scale_shift!r}")
        if self.cross_attention_norm not in (None, "group_norm"):
            raise ValueError(f"cross_attention_norm {self.cross_attention_norm!r}")

    def per_block(self) -> list[dict[str, Any]]:
        """Layers, head size and cross-only of each down block (diffusers' expansion)."""
        n = len(self.block_out_channels)
        layers = _tuple(self.layers_per_block, n)
        heads = _tuple(self.attention_head_dim, n)
        only = _tuple(self.only_cross_attention, n)
        return [{"layers": layers[i], "head_dim": heads[i], "only_cross": only[i]}
                for i in range(n)]  # fmt: skip

    @property
    def mid_only_cross(self) -> bool:
        if self.mid_block_only_cross_attention is not None:
            return self.mid_block_only_cross_attention
        return self.only_cross_attention if isinstance(self.only_cross_attention, bool) else False
