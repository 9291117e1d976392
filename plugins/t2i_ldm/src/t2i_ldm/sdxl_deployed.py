"""SDXL components rebuilt around exported modules (Optimum's SDXL export layout,
:mod:`t2i_ldm.sdxl_export`).

Like :mod:`t2i_ldm.deployed`, this module imports none of the family's model code (no
``t2i_ldm.unet`` / ``sdxl_text`` / ``text_encoder`` / ``openclip``, no transformers modeling
module): only the core, :mod:`t2i_ldm.config`, :mod:`t2i_ldm.denoiser`'s micro-conditioning
numbers and :mod:`t2i_ldm.deployed`.

- :func:`denoiser`: ``unet`` inside ``LdmDenoiser``'s Karras wrapper, fed ``cond.pooled`` as
  ``text_embeds`` and the :class:`~t2i_ldm.denoiser.MicroConditioning` numbers as
  ``time_ids``;
- :func:`text_encoder`: ``text_encoder`` (CLIP-L) and ``text_encoder_2`` (bigG) per 77-token
  chunk, with :class:`t2i_ldm.sdxl_text.SdxlTextEncoder`'s padding rewrite, per-tower
  emphasis, concatenation and empty-prompt zeros around them;
- :func:`exported_refiner`: what an export recorded of the ``ldm`` recipe's refiner stage, so
  a base + refiner export builds its recipe with neither checkpoint read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from t2i.diffusion.sampling.denoisers import DiscreteDenoiser
from t2i.payloads import Conditioning, Tokens
from t2i_ldm.config import NoiseScheduleConfig
from t2i_ldm.denoiser import MicroConditioning, micro_numbers
from t2i_ldm.deployed import Module, _apply_emphasis, _device_of, check_chunk_ids

REFINER_NODES = ("refiner_text_encoder", "refiner_denoiser")
"""The refiner stage's loader nodes (:func:`t2i_ldm.refiner.add_refiner_stage`; its
``refiner_decoder`` too when the refiner has a VAE)."""
TOWER_MODULES = {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}
"""Optimum's model name of each SDXL text tower (as :data:`t2i_ldm.sdxl_export.TOWER_MODULES`)."""


class DeployedSdxlUNet:
    """``(x_in, t, cond) -> prediction``: the exported SDXL ``unet`` on ``cond.embeds``,
    ``cond.pooled`` and the micro-conditioning numbers."""

    def __init__(self, unet: Module, micro: MicroConditioning, pooled: int, count: int) -> None:
        self.unet, self.micro, self.pooled_width, self.count = unet, micro, pooled, count

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        pooled = cond.pooled if isinstance(cond, Conditioning) else None
        if pooled is None or pooled.shape[-1] != self.pooled_width:
            raise ValueError(
                f"an SDXL UNet needs the pooled text embedding of width {self.pooled_width} "
                "(Conditioning.pooled): use the checkpoint's SDXL text encoder"
            )
        b = x.shape[0]
        pooled = pooled.to(x.device).expand(b, -1) if pooled.shape[0] == 1 else pooled
        time_ids = micro_numbers(self.micro, tuple(x.shape), self.count, cond).to(x.device)
        context = cond.embeds.to(x.device)
        return self.unet(x, t.to(torch.float32), context, pooled.to(x.dtype), time_ids)


class DeployedSdxlDenoiser(DiscreteDenoiser):
    """``D(x, sigma, cond) -> x0`` over an exported SDXL UNet (the math of ``LdmDenoiser``)."""

    def __init__(self, unet: Module, prediction_type: str, schedule: NoiseScheduleConfig,
                 predictor: DeployedSdxlUNet, quantize: bool = False) -> None:  # fmt: skip
        super().__init__(predictor, schedule.alphas_cumprod(), prediction_type, quantize=quantize)
        self.unet = unet
        self.schedule = schedule

    @property
    def device(self) -> torch.device:
        return _device_of(self.unet)


def _micro(options: Mapping[str, Any]) -> MicroConditioning:
    def pair(value: Any) -> tuple[int, int] | None:
        return None if value is None else (int(value[0]), int(value[1]))

    return MicroConditioning(
        factor=int(options["factor"]),
        original_size=pair(options["original_size"]),
        crop_top_left=pair(options["crop_top_left"]),
        target_size=pair(options["target_size"]),
        aesthetic_score=float(options["aesthetic_score"]),
        negative_aesthetic_score=float(options["negative_aesthetic_score"]),
    )


def denoiser(modules: Mapping[str, Module], *, prediction_type: str, schedule: dict,
             micro: dict, pooled_width: int, micro_count: int,
             quantize: bool = False) -> DeployedSdxlDenoiser:  # fmt: skip
    """Factory of an SDXL ``LdmDenoiser``'s deployment (module ``unet``)."""
    unet = modules["unet"]
    predictor = DeployedSdxlUNet(unet, _micro(micro), pooled_width, micro_count)
    return DeployedSdxlDenoiser(
        unet, prediction_type, NoiseScheduleConfig(**schedule), predictor, quantize
    )


class DeployedSdxlTextEncoder:
    """:class:`t2i.contracts.TextEncoder` over ``text_encoder`` / ``text_encoder_2``:
    ``Tokens -> Conditioning(embeds (B, 77*n, 2048 | 1280), pooled (B, E))`` as
    :class:`t2i_ldm.sdxl_text.SdxlTextEncoder`."""

    def __init__(self, towers: Mapping[str, Module], *, chunk_length: int, vocab_size: int,
                 emphasis: str, zero_empty: bool, pad_id_g: int, eos_id: int) -> None:  # fmt: skip
        self.towers = dict(towers)
        self.chunk_length, self.vocab_size, self.emphasis = chunk_length, vocab_size, emphasis
        self.zero_empty, self.pad_id_g, self.eos_id = zero_empty, pad_id_g, eos_id

    def __call__(self, tokens: Tokens) -> Conditioning:
        with torch.no_grad():
            return self.encode(tokens)

    def encode(self, tokens: Tokens) -> Conditioning:
        """Encode ``tokens`` chunk by chunk (``SdxlTextEncoder.encode``)."""
        ids, chunk = tokens.ids, self.chunk_length
        check_chunk_ids(ids, chunk, self.vocab_size)
        batch, n = ids.shape[0], ids.shape[1] // chunk
        ids = ids.to(torch.int64)
        weights = None
        if tokens.weights is not None and self.emphasis != "ignore":
            weights = tokens.weights.reshape(batch * n, chunk)
        parts, pooled = [], None
        for key, tower in self.towers.items():
            tower_ids = self._g_ids(tokens, ids) if key == "clip_g" else ids
            states, tower_pooled = tower(tower_ids.reshape(batch * n, chunk))
            if weights is not None:
                normalize = self.emphasis == "original"
                states = _apply_emphasis(states, weights.to(states.device), normalize)
            parts.append(states)
            if key == "clip_g":
                pooled = tower_pooled
        embeds = torch.cat(parts, dim=-1).reshape(batch, n * chunk, -1)
        pooled = pooled.reshape(batch, n, -1)[:, 0]
        embeds, pooled = self._zero_empty(tokens, embeds, pooled)
        pad_chunk = None
        if tokens.pad_chunk is not None:  # A1111 pads with the empty prompt's encoding
            pad = tokens.pad_chunk
            saved, self.zero_empty = self.zero_empty, False
            try:
                pad_chunk = self.encode(Tokens(ids=pad, weights=torch.ones(pad.shape))).embeds
            finally:
                self.zero_empty = saved
        return Conditioning(embeds=embeds, pooled=pooled, pad_chunk=pad_chunk)

    def _g_ids(self, tokens: Tokens, ids: torch.Tensor) -> torch.Tensor:
        """bigG's ids: CLIP-L's with every padding position set to ``pad_id_g``."""
        if tokens.mask is not None:
            real = tokens.mask.to(ids.device)
        else:  # padding: positions after the first end token of each chunk
            per_chunk = (ids.reshape(-1, self.chunk_length) == self.eos_id).int()
            real = ((per_chunk.cumsum(-1) - per_chunk) == 0).reshape(ids.shape)
        return torch.where(real, ids, torch.full_like(ids, self.pad_id_g))

    def _zero_empty(self, tokens: Tokens, embeds: torch.Tensor, pooled: torch.Tensor):
        pad = tokens.pad_chunk
        if not self.zero_empty or pad is None or tokens.ids.shape[1] != pad.shape[1]:
            return embeds, pooled
        empty = (tokens.ids == pad.to(tokens.ids.device)).all(dim=1).to(embeds.device)
        if not bool(empty.any()):
            return embeds, pooled
        keep = (~empty).to(embeds.dtype)
        return embeds * keep[:, None, None], pooled * keep[:, None].to(pooled.dtype)


def text_encoder(modules: Mapping[str, Module], *, towers: list[str], chunk_length: int,
                 vocab_size: int, emphasis: str = "original", zero_empty: bool = True,
                 pad_id_g: int = 0, eos_id: int = 49407) -> DeployedSdxlTextEncoder:  # fmt: skip
    """Factory of an ``SdxlTextEncoder``'s deployment (``text_encoder``, ``text_encoder_2``)."""
    return DeployedSdxlTextEncoder(
        {key: modules[TOWER_MODULES[key]] for key in towers},
        chunk_length=chunk_length,
        vocab_size=vocab_size,
        emphasis=emphasis,
        zero_empty=zero_empty,
        pad_id_g=pad_id_g,
        eos_id=eos_id,
    )


def exported_refiner(
    deployed: Mapping[str, Any] | None, refiner: str | Any
) -> dict[str, Any] | None:
    """The refiner stage as the export at ``deployed`` (a runtime's record,
    :data:`t2i_onnx.runtime.DEPLOYED_OPTION`) recorded it: ``decode`` (the refiner's VAE
    decodes) and ``title`` (its infotext ``Refiner`` value, name and hash), when the runtime
    provides every model of the stage; None otherwise (the refiner checkpoint is read)."""
    if not deployed:
        return None
    graph = deployed.get("graph") or {}
    nodes = graph.get("nodes", {})
    needed = {*REFINER_NODES, *(("refiner_decoder",) if "refiner_decoder" in nodes else ())}
    if not needed <= set(deployed.get("provided", ())):
        return None
    recorded = nodes["refiner_denoiser"].get("params", {}).get("options", {}).get("checkpoint")
    if recorded not in (None, str(refiner)):
        import structlog

        structlog.get_logger(__name__).warning(
            "ldm_deployed_refiner_differs", refiner=str(refiner), exported=recorded,
            runs="the export's models",
        )  # fmt: skip
    title = graph.get("meta", {}).get("infotext", {}).get("Refiner")
    return {"decode": "refiner_decoder" in nodes, "title": title}
