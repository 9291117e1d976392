"""Export specs of SDXL's UNet and text towers, in Optimum's SDXL export layout.

Optimum exports ``StableDiffusionXLPipeline`` as ``text_encoder`` (CLIP-L), ``text_encoder_2``
(OpenCLIP bigG with its projection), ``unet``, ``vae_decoder``, ``vae_encoder``; the refiner
(``StableDiffusionXLImg2ImgPipeline``) has no ``text_encoder``. The boundaries here, where
they differ from Optimum's:

- ``unet``: ``(sample (B, C, h, w), timestep (B,) float32, encoder_hidden_states (B, S, D),
  text_embeds (B, P), time_ids (B, K) float32) -> out_sample``. ``time_ids`` are the raw
  micro-conditioning numbers (base 6: original size, crop, target size; refiner 5: original
  size, crop, aesthetic score); their Fourier embedding (``sdxl_vector``) is inside the graph,
  as in Optimum. The Karras wrapper and the choice of numbers stay in the component.
- ``text_encoder`` / ``text_encoder_2``: one 77-token chunk, ``input_ids ->
  (last_hidden_state, pooler_output | text_embeds)``; ``last_hidden_state`` is the state the
  component's ``clip_skip`` picks (1: the penultimate, no final LayerNorm; Optimum outputs
  every ``hidden_states``), ``text_embeds`` bigG's projected pooled vector. bigG's padding
  rewrite, emphasis, the concatenation and the empty-prompt zeros are the component's.

The VAE exports as SD's (:func:`t2i_ldm.export.vae_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import torch
from torch import nn

from t2i.contracts import Deployment, ExportedModule
from t2i_ldm.export import (
    BATCH,
    EXAMPLE_BATCH,
    EXAMPLE_LATENT,
    EXAMPLE_SEQUENCE,
    SEQUENCE,
    _follow_mode,
    _param,
    _randn,
    _round_up,
    example_token_ids,
)

if TYPE_CHECKING:
    from transformers import CLIPTextModel

    from t2i_ldm.denoiser import LdmDenoiser
    from t2i_ldm.sdxl_text import SdxlTextEncoder
    from t2i_ldm.unet import UNetModel

TOWER_MODULES = {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}
"""Optimum's model name of each SDXL text tower."""


# -- unet ------------------------------------------------------------------------------------
class SdxlUNetExport(nn.Module):
    """``(sample, timestep, encoder_hidden_states, text_embeds, time_ids) -> out_sample``:
    the SDXL UNet with its ``label_emb`` input built from the pooled text and the raw
    micro-conditioning numbers (:func:`t2i_ldm.unet.sdxl_vector`)."""

    def __init__(self, unet: UNetModel) -> None:
        super().__init__()
        self.unet = unet
        _follow_mode(self, unet)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        text_embeds: torch.Tensor,
        time_ids: torch.Tensor,
    ) -> torch.Tensor:
        from t2i_ldm.unet import sdxl_vector

        y = sdxl_vector(text_embeds, time_ids, self.unet.config.micro_embed_dim)
        return self.unet(sample, timestep, encoder_hidden_states, y)


def micro_count(unet: UNetModel) -> tuple[int, int]:
    """``(pooled width, micro numbers)`` of an SDXL UNet's ``label_emb`` input: the refiner's
    5 numbers when the rest is its context width (bigG alone: pooled width = context width, as
    in ``sd_xl_refiner.yaml``), else the base's 6."""
    c = unet.config
    for count in (5, 6):
        pooled = c.adm_in_channels - count * c.micro_embed_dim
        if count == 6 or pooled == c.context_dim:
            break
    if pooled <= 0:
        raise ValueError(f"adm_in_channels {c.adm_in_channels} is not pooled + 6 * micro width")
    return pooled, count


def sdxl_unet_export(unet: UNetModel, pooled_width: int, count: int) -> ExportedModule:
    """``unet`` of an SDXL base or refiner UNet (Optimum's SDXL input names)."""
    c, weight = unet.config, _param(unet)
    side = _round_up(EXAMPLE_LATENT, c.downsample_factor)
    sample = _randn((EXAMPLE_BATCH, c.in_channels, side, side), weight, seed=0)
    timestep = torch.linspace(999.0, 437.5, EXAMPLE_BATCH, device=weight.device)
    context = _randn((EXAMPLE_BATCH, EXAMPLE_SEQUENCE, c.context_dim), weight, seed=1)
    pooled = _randn((EXAMPLE_BATCH, pooled_width), weight, seed=5)
    numbers = [64.0, 48.0, 0.0, 8.0] + ([64.0, 48.0] if count == 6 else [6.0])
    time_ids = torch.tensor([numbers] * EXAMPLE_BATCH, dtype=torch.float32, device=weight.device)
    time_ids[1] += 8.0  # rows differ
    image_axes = {0: BATCH, 2: "height", 3: "width"}
    return ExportedModule(
        name="unet",
        module=SdxlUNetExport(unet),
        example_inputs=(sample, timestep, context, pooled, time_ids),
        input_names=("sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"),
        output_names=("out_sample",),
        dynamic_axes={
            "sample": image_axes,
            "timestep": {0: BATCH},
            "encoder_hidden_states": {0: BATCH, 1: SEQUENCE},
            "text_embeds": {0: BATCH},
            "time_ids": {0: BATCH},
            "out_sample": image_axes,
        },
    )


def sdxl_denoiser_deployment(denoiser: LdmDenoiser, pooled_width: int, count: int) -> Deployment:
    """How :mod:`t2i_ldm.sdxl_deployed` rebuilds an SDXL ``LdmDenoiser`` around ``unet``."""
    micro = attrs.asdict(denoiser.model.micro)
    return Deployment(
        "t2i_ldm.sdxl_deployed:denoiser",
        {
            "prediction_type": denoiser.prediction_type,
            "schedule": attrs.asdict(denoiser.schedule),
            "quantize": bool(denoiser.quantize),
            "micro": micro,
            "pooled_width": pooled_width,
            "micro_count": count,
        },
    )


# -- text towers -----------------------------------------------------------------------------
class SdxlTowerExport(nn.Module):
    """``input_ids`` (B, 77) -> ``(last_hidden_state (B, 77, W), pooled (B, E))``: one chunk
    through one SDXL tower, ``hidden_states[-(clip_skip + 1)]`` (no final LayerNorm) and the
    pooled output (bigG: through ``projection``, Optimum's ``text_embeds``)."""

    def __init__(
        self, model: CLIPTextModel, clip_skip: int, projection: nn.Linear | None = None
    ) -> None:
        super().__init__()
        self.model, self.projection, self.clip_skip = model, projection, clip_skip
        _follow_mode(self, model)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, output_hidden_states=True)
        pooled = out.pooler_output
        if self.projection is not None:
            pooled = self.projection(pooled)
        return out.hidden_states[-(self.clip_skip + 1)], pooled


def sdxl_text_exports(encoder: SdxlTextEncoder) -> tuple[ExportedModule, ...]:
    """``text_encoder`` (CLIP-L, absent in the refiner) and ``text_encoder_2`` (bigG)."""
    exports = []
    for key, model in encoder.towers.items():
        c = model.config
        ids = example_token_ids(
            c.vocab_size + encoder.extra_tokens,
            start=c.bos_token_id,
            end=c.eos_token_id,
            pad=encoder.pad_id_g if key == "clip_g" else c.eos_token_id,
            device=_param(model).device,
            length=c.max_position_embeddings,
        )
        pooled = "text_embeds" if key == "clip_g" else "pooler_output"
        projection = encoder.projection if key == "clip_g" else None
        exports.append(
            ExportedModule(
                name=TOWER_MODULES[key],
                module=SdxlTowerExport(model, encoder.clip_skip, projection),
                example_inputs=(ids,),
                input_names=("input_ids",),
                output_names=("last_hidden_state", pooled),
                dynamic_axes={
                    "input_ids": {0: BATCH, 1: SEQUENCE},
                    "last_hidden_state": {0: BATCH, 1: SEQUENCE},
                    pooled: {0: BATCH},
                },
            )
        )
    return tuple(exports)


def sdxl_text_deployment(encoder: SdxlTextEncoder) -> Deployment:
    """How :mod:`t2i_ldm.sdxl_deployed` rebuilds an :class:`SdxlTextEncoder`."""
    g = encoder.clip_g.config
    vocab = min(int(m.config.vocab_size) for m in encoder.towers.values())
    options = {
        "towers": list(encoder.towers),
        "chunk_length": int(g.max_position_embeddings),
        "vocab_size": vocab + encoder.extra_tokens,
        "emphasis": encoder.emphasis,
        "zero_empty": bool(encoder.zero_empty),
        "pad_id_g": int(encoder.pad_id_g),
        "eos_id": int(g.eos_token_id),
    }
    return Deployment("t2i_ldm.sdxl_deployed:text_encoder", options)
