"""Export specs of the LDM components (:class:`t2i.contracts.ExportSpec`), in Optimum's layout.

Optimum exports Stable Diffusion as separate ONNX models, one folder each: ``text_encoder``,
``unet``, ``vae_encoder``, ``vae_decoder`` (``optimum/exporters/utils.py``,
``_get_submodels_for_export_diffusion``; see ``shared/reference/architectures.md`` 6.1). The
file stems, input/output names and dynamic-axis names here are Optimum's, and every exported
module computes exactly what its component computes on the same tensors, so a runtime can put
an ONNX session where the module was. Where that boundary differs from Optimum's, it is said:

- ``unet``: ``(sample (B, C, h, w), timestep (B,), encoder_hidden_states (B, S, D)) ->
  out_sample``, the UNet call of :class:`t2i_ldm.denoiser.LdmDenoiser`; the Karras wrapper
  around it (sigma -> timestep, input scaling, prediction -> x0) stays in the denoiser.
  ``timestep`` is float32 (fractional timesteps, as samplers pass them; Optimum: a scalar).
- ``vae_decoder``: ``latent_sample`` are the *scaled* latents a sampler produces and ``sample``
  the image in [0, 1] (:meth:`LdmDecoder.decode`; Optimum's takes ``latents / scaling_factor``
  and returns [-1, 1]).
- ``vae_encoder``: ``sample`` is an image in [0, 1]; it returns the scaled posterior's
  ``latent_mean`` (= :meth:`LdmDecoder.encode`) and ``latent_std``, so that
  ``encode(sample=True)`` is ``latent_mean + latent_std * noise`` (Optimum returns one
  ``latent_parameters``: unscaled mean and log-variance).
- ``text_encoder`` (CLIP): one 77-token chunk, ``input_ids -> (last_hidden_state,
  pooler_output)``; ``last_hidden_state`` is the state the component's ``clip_skip`` picks.
  Chunking and emphasis (token weights) are the component's, outside the module.
- MiniLM: ``text_encoder`` (the frozen BERT, padding masked inside) and ``text_adapter``
  (``last_hidden_state -> encoder_hidden_states``), two modules because the component applies
  emphasis between them.

Example inputs are small (batch 2, 8x8 latents rounded up to the UNet's multiple), seeded, on
the module's device and dtype (token ids int64). Batch 2, not 1, so that a trace records no
batch-of-one special case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from t2i.contracts import Deployment, ExportedModule
from t2i_ldm.text_encoder import clip_chunk_states

if TYPE_CHECKING:
    from transformers import BertModel, CLIPTextModel

    from t2i_ldm.denoiser import LdmDenoiser
    from t2i_ldm.minilm import MiniLmConditioner
    from t2i_ldm.unet import UNetModel
    from t2i_ldm.vae import AutoencoderKL

EXAMPLE_BATCH = 2
"""Batch size of every example input."""
EXAMPLE_LATENT = 8
"""Latent side of the examples (rounded up to the UNet's ``downsample_factor``)."""
EXAMPLE_SEQUENCE = 77
"""Token axis of the examples: one CLIP chunk."""
BATCH = "batch_size"
SEQUENCE = "sequence_length"


def _param(module: nn.Module) -> torch.Tensor:
    return next(module.parameters())


def _randn(shape: tuple[int, ...], like: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=like.device, dtype=like.dtype)


def _follow_mode(wrapper: nn.Module, wrapped: nn.Module) -> None:
    """Give ``wrapper`` the train/eval flag of what it wraps (not recursively). Exporters put a
    module in eval mode and restore its own flag recursively afterwards (``torch.onnx.export``
    does): a new wrapper's default ``training=True`` would leave the component in train mode."""
    wrapper.training = wrapped.training


def _round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def example_token_ids(
    vocab_size: int,
    *,
    start: int | None,
    end: int | None,
    pad: int | None,
    device: torch.device,
    batch: int = EXAMPLE_BATCH,
    length: int = EXAMPLE_SEQUENCE,
    seed: int = 0,
) -> torch.Tensor:
    """``(batch, length)`` int64 ids laid out as a tokenizer pads them: ``start``, words,
    ``end``, then ``pad``; row ``i`` has ``length // 2 - i`` words (so pooling positions differ).
    Words avoid the special ids."""
    specials = {i for i in (start, end, pad) if i is not None}
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, length), generator=gen)
    fallback = min(set(range(len(specials) + 1)) - specials)
    ids[torch.isin(ids, torch.tensor(sorted(specials), dtype=ids.dtype))] = fallback
    for row in range(batch):
        words = max(1, length // 2 - row)
        if start is not None:
            ids[row, 0] = start
        if end is not None:
            ids[row, words + 1] = end
        if pad is not None:
            ids[row, words + 2 :] = pad
    return ids.to(device)


# -- unet ------------------------------------------------------------------------------------
def unet_export(unet: UNetModel) -> ExportedModule:
    """``unet``: the UNet itself (its forward is the call the denoiser makes)."""
    c, weight = unet.config, _param(unet)
    side = _round_up(EXAMPLE_LATENT, c.downsample_factor)
    sample = _randn((EXAMPLE_BATCH, c.in_channels, side, side), weight, seed=0)
    timestep = torch.linspace(999.0, 437.5, EXAMPLE_BATCH, device=weight.device)  # float32
    context = _randn((EXAMPLE_BATCH, EXAMPLE_SEQUENCE, c.context_dim), weight, seed=1)
    image_axes = {0: BATCH, 2: "height", 3: "width"}
    return ExportedModule(
        name="unet",
        module=unet,
        example_inputs=(sample, timestep, context),
        input_names=("sample", "timestep", "encoder_hidden_states"),
        output_names=("out_sample",),
        dynamic_axes={
            "sample": image_axes,
            "timestep": {0: BATCH},
            "encoder_hidden_states": {0: BATCH, 1: SEQUENCE},
            "out_sample": image_axes,
        },
    )


def denoiser_deployment(denoiser: LdmDenoiser) -> Deployment:
    """How :mod:`t2i_ldm.deployed` rebuilds the denoiser around an exported ``unet``."""
    import attrs

    return Deployment(
        "t2i_ldm.deployed:denoiser",
        {
            "prediction_type": denoiser.prediction_type,
            "schedule": attrs.asdict(denoiser.schedule),
            "quantize": bool(denoiser.quantize),
        },
    )


# -- vae -------------------------------------------------------------------------------------
class VaeDecoderExport(nn.Module):
    """``latent_sample`` (B, C, h, w) scaled latents -> ``sample`` (B, 3, h*f, w*f) float32
    image in [0, 1]: :meth:`t2i_ldm.vae.LdmDecoder.decode` as one module.

    Holds only the VAE's ``post_quant_conv`` and ``decoder``.
    """

    def __init__(self, vae: AutoencoderKL, scaling_factor: float) -> None:
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder
        self.scaling_factor = float(scaling_factor)
        _follow_mode(self, vae)

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        z = (latent_sample / self.scaling_factor).to(self.post_quant_conv.weight.dtype)
        x = self.decoder(self.post_quant_conv(z))
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


class VaeEncoderExport(nn.Module):
    """``sample`` (B, 3, H, W) image in [0, 1] -> scaled posterior ``(latent_mean,
    latent_std)`` (B, C, H/f, W/f): :meth:`t2i_ldm.vae.LdmDecoder.encode` as one module
    (``sample=False`` gives ``latent_mean``; ``sample=True`` adds ``latent_std * noise``).

    Holds only the VAE's ``encoder`` and ``quant_conv``.
    """

    def __init__(self, vae: AutoencoderKL, scaling_factor: float) -> None:
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv
        self.scaling_factor = float(scaling_factor)
        _follow_mode(self, vae)

    def forward(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from t2i_ldm.vae import DiagonalGaussian

        x = (sample * 2.0 - 1.0).to(self.quant_conv.weight.dtype)
        posterior = DiagonalGaussian(self.quant_conv(self.encoder(x)))
        return posterior.mean * self.scaling_factor, posterior.std * self.scaling_factor


def vae_exports(vae: AutoencoderKL, scaling_factor: float) -> tuple[ExportedModule, ...]:
    """``vae_decoder`` and ``vae_encoder`` of an autoencoder whose latents are scaled by
    ``scaling_factor``."""
    c, weight = vae.config, _param(vae)
    f, side = c.factor, EXAMPLE_LATENT
    latent = _randn((EXAMPLE_BATCH, c.embed_dim, side, side), weight, seed=2)
    gen = torch.Generator().manual_seed(3)
    image = torch.rand((EXAMPLE_BATCH, c.in_channels, side * f, side * f), generator=gen)
    image = image.to(device=weight.device, dtype=weight.dtype)
    latent_axes = {0: BATCH, 2: "latent_height", 3: "latent_width"}
    image_axes = {0: BATCH, 2: "sample_height", 3: "sample_width"}
    decoded_axes = {0: BATCH, 2: f"latent_height * {f}", 3: f"latent_width * {f}"}
    encoded_axes = {0: BATCH, 2: f"sample_height / {f}", 3: f"sample_width / {f}"}
    decoder = ExportedModule(
        name="vae_decoder",
        module=VaeDecoderExport(vae, scaling_factor),
        example_inputs=(latent,),
        input_names=("latent_sample",),
        output_names=("sample",),
        dynamic_axes={"latent_sample": latent_axes, "sample": decoded_axes},
    )
    encoder = ExportedModule(
        name="vae_encoder",
        module=VaeEncoderExport(vae, scaling_factor),
        example_inputs=(image,),
        input_names=("sample",),
        output_names=("latent_mean", "latent_std"),
        dynamic_axes={
            "sample": image_axes,
            "latent_mean": encoded_axes,
            "latent_std": encoded_axes,
        },
    )
    return decoder, encoder


# -- text encoders ---------------------------------------------------------------------------
class ClipTextExport(nn.Module):
    """``input_ids`` (B, 77) -> ``(last_hidden_state (B, 77, D), pooler_output (B, D))``:
    one chunk of :class:`t2i_ldm.text_encoder.ClipTextEncoder` before emphasis, with its
    ``clip_skip``."""

    def __init__(self, model: CLIPTextModel, clip_skip: int = 1) -> None:
        super().__init__()
        self.model = model
        self.clip_skip = clip_skip
        _follow_mode(self, model)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return clip_chunk_states(self.model, input_ids, self.clip_skip)


def clip_text_export(model: CLIPTextModel, clip_skip: int = 1) -> ExportedModule:
    """``text_encoder`` of a CLIP text model (SD1 CLIP-L, SD2's converted OpenCLIP)."""
    c = model.config
    ids = example_token_ids(
        c.vocab_size,
        start=c.bos_token_id,
        end=c.eos_token_id,
        pad=c.pad_token_id,
        device=_param(model).device,
        length=c.max_position_embeddings,
    )
    return ExportedModule(
        name="text_encoder",
        module=ClipTextExport(model, clip_skip),
        example_inputs=(ids,),
        input_names=("input_ids",),
        output_names=("last_hidden_state", "pooler_output"),
        dynamic_axes={
            "input_ids": {0: BATCH, 1: SEQUENCE},
            "last_hidden_state": {0: BATCH, 1: SEQUENCE},
            "pooler_output": {0: BATCH},
        },
    )


def clip_text_deployment(model: CLIPTextModel, emphasis: str) -> Deployment:
    """How :mod:`t2i_ldm.deployed` rebuilds a CLIP text encoder around ``text_encoder``."""
    c = model.config
    options = {
        "chunk_length": int(c.max_position_embeddings),
        "vocab_size": int(c.vocab_size),
        "emphasis": emphasis,
    }
    return Deployment("t2i_ldm.deployed:clip_text_encoder", options)


class MiniLmStatesExport(nn.Module):
    """``input_ids`` (B, T) -> MiniLM's ``last_hidden_state`` (B, T, 384), padding masked
    (:meth:`t2i_ldm.minilm.MiniLmConditioner.bert_states`)."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert
        _follow_mode(self, bert)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        from t2i_ldm.minilm import minilm_states

        return minilm_states(self.bert, input_ids)


def minilm_exports(conditioner: MiniLmConditioner, length: int) -> tuple[ExportedModule, ...]:
    """``text_encoder`` (frozen MiniLM) and ``text_adapter`` (its trained linear map to the
    UNet's context width) of a MiniLM conditioner, for ``length``-token chunks."""
    c, weight = conditioner.bert.config, _param(conditioner.adapter)
    ids = example_token_ids(
        c.vocab_size,
        start=None,
        end=None,
        pad=c.pad_token_id,
        device=weight.device,
        length=length,
    )
    states = _randn((EXAMPLE_BATCH, length, c.hidden_size), weight, seed=4)
    token_axes = {0: BATCH, 1: SEQUENCE}
    bert = ExportedModule(
        name="text_encoder",
        module=MiniLmStatesExport(conditioner.bert),
        example_inputs=(ids,),
        input_names=("input_ids",),
        output_names=("last_hidden_state",),
        dynamic_axes={"input_ids": token_axes, "last_hidden_state": token_axes},
    )
    adapter = ExportedModule(
        name="text_adapter",
        module=conditioner.adapter,
        example_inputs=(states,),
        input_names=("last_hidden_state",),
        output_names=("encoder_hidden_states",),
        dynamic_axes={"last_hidden_state": token_axes, "encoder_hidden_states": token_axes},
    )
    return bert, adapter
