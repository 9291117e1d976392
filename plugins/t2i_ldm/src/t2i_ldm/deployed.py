"""LDM components rebuilt around exported modules (:class:`t2i.contracts.Deployment`).

A deployment runtime (ONNX Runtime, :mod:`t2i_onnx.runtime`) calls these factories with one
callable per exported module (torch tensors in and out, the boundaries of
:mod:`t2i_ldm.export`) and the JSON options the component's ``export_spec()`` recorded. This
module imports none of the family's model code (no ``t2i_ldm.unet`` / ``vae`` /
``text_encoder``, no transformers modeling module): only the core and :mod:`t2i_ldm.config`.

- :func:`denoiser`: ``unet`` inside the same Karras wrapper as :class:`t2i_ldm.denoiser.
  LdmDenoiser` (sigma -> timestep, input scaling, eps / v -> x0);
- :func:`decoder`: ``vae_decoder`` is :meth:`LdmDecoder.decode`, ``vae_encoder`` the scaled
  posterior of :meth:`LdmDecoder.encode`;
- :func:`clip_text_encoder`: ``text_encoder`` per 77-token chunk, with the web UI's chunking
  and emphasis around it as :class:`t2i_ldm.text_encoder.ClipTextEncoder` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from t2i.diffusion.sampling.denoisers import DiscreteDenoiser
from t2i.payloads import Conditioning, Image, Latent, Tokens
from t2i_ldm.config import NoiseScheduleConfig

Module = Callable[..., Any]


def _device_of(module: Any) -> torch.device:
    first = next(module.parameters(), None) if hasattr(module, "parameters") else None
    return first.device if first is not None else torch.device("cpu")


def check_chunk_ids(ids: torch.Tensor, chunk: int, vocab_size: int) -> None:
    """Refuse token ids that are not ``(B, chunk * n)`` in ``[0, vocab_size)`` (ValueError)."""
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.shape[1] % chunk:
        raise ValueError(f"tokens.ids must be (B, {chunk} * n), got {tuple(ids.shape)}")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size}): wrong tokenizer")


class DeployedUNet:
    """``(x_in, t, cond) -> prediction``: the exported ``unet`` on ``cond.embeds``."""

    def __init__(self, unet: Module) -> None:
        self.unet = unet

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        context = cond.embeds if isinstance(cond, Conditioning) else cond
        return self.unet(x, t.to(torch.float32), context.to(x.device))


class DeployedLdmDenoiser(DiscreteDenoiser):
    """``D(x, sigma, cond) -> x0`` over an exported SD UNet (the math of ``LdmDenoiser``)."""

    def __init__(self, unet: Module, prediction_type: str, schedule: NoiseScheduleConfig,
                 quantize: bool = False) -> None:  # fmt: skip
        super().__init__(
            DeployedUNet(unet), schedule.alphas_cumprod(), prediction_type, quantize=quantize
        )
        self.unet = unet
        self.schedule = schedule

    @property
    def device(self) -> torch.device:
        return _device_of(self.unet)


def denoiser(modules: Mapping[str, Module], *, prediction_type: str, schedule: dict,
             quantize: bool = False) -> DeployedLdmDenoiser:  # fmt: skip
    """Factory of an ``LdmDenoiser``'s deployment (module ``unet``)."""
    return DeployedLdmDenoiser(
        modules["unet"], prediction_type, NoiseScheduleConfig(**schedule), quantize
    )


class DeployedLdmDecoder:
    """:class:`t2i.contracts.Decoder` over the exported ``vae_decoder`` / ``vae_encoder``."""

    def __init__(self, modules: Mapping[str, Module], factor: int, channels: int) -> None:
        self.vae_decoder = modules["vae_decoder"]
        self.vae_encoder = modules.get("vae_encoder")
        self.factor, self.channels = factor, channels

    @torch.no_grad()
    def decode(self, latent: Latent) -> Image:
        return Image(self.vae_decoder(latent.samples).float())

    @torch.no_grad()
    def encode(
        self, image: Image, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> Latent:
        """Scaled posterior mean, or a draw ``mean + std * noise`` with ``generator``."""
        if self.vae_encoder is None:
            raise ValueError("this export has no vae_encoder: img2img needs it")
        mean, std = self.vae_encoder(image.pixels)
        if not sample:
            return Latent(mean)
        device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=device)
        return Latent(mean + std * noise.to(mean.device))


def decoder(modules: Mapping[str, Module], *, factor: int, channels: int) -> DeployedLdmDecoder:
    """Factory of an ``LdmDecoder``'s deployment (modules ``vae_decoder``, ``vae_encoder``)."""
    return DeployedLdmDecoder(modules, factor, channels)


def _apply_emphasis(states: torch.Tensor, weights: torch.Tensor, normalize: bool) -> torch.Tensor:
    """The web UI's emphasis, as :func:`t2i_ldm.text_encoder.apply_emphasis` (float32)."""
    work = states.float()
    weighted = work * weights.to(work.dtype)[..., None]
    if normalize:
        before = work.mean(dim=(1, 2), keepdim=True)
        after = weighted.mean(dim=(1, 2), keepdim=True)
        scale = torch.where(after != 0, before / torch.where(after != 0, after, 1), 1)
        weighted = weighted * scale
    return weighted.to(states.dtype)


class DeployedClipTextEncoder:
    """:class:`t2i.contracts.TextEncoder` over the exported ``text_encoder`` (one chunk):
    ``Tokens -> Conditioning(embeds (B, 77*n, D), pooled (B, D))`` as ``ClipTextEncoder``."""

    def __init__(self, chunk: Module, chunk_length: int, vocab_size: int, emphasis: str) -> None:
        self.chunk = chunk
        self.chunk_length, self.vocab_size, self.emphasis = chunk_length, vocab_size, emphasis

    def __call__(self, tokens: Tokens) -> Conditioning:
        ids, chunk = tokens.ids, self.chunk_length
        check_chunk_ids(ids, chunk, self.vocab_size)
        batch, n = ids.shape[0], ids.shape[1] // chunk
        with torch.no_grad():
            states, pooled = self.chunk(ids.reshape(batch * n, chunk).to(torch.int64))
        if tokens.weights is not None and self.emphasis != "ignore":
            weights = tokens.weights.reshape(batch * n, chunk).to(states.device)
            states = _apply_emphasis(states, weights, self.emphasis == "original")
        extra = {}
        pad = getattr(tokens, "pad_chunk", None)
        if pad is not None:  # the empty prompt's chunk, encoded on its own (weights 1)
            extra["pad_chunk"] = self(Tokens(ids=pad, weights=torch.ones(pad.shape))).embeds
        return Conditioning(
            embeds=states.reshape(batch, n * chunk, -1),
            pooled=pooled.reshape(batch, n, -1)[:, 0],
            **extra,
        )


def clip_text_encoder(modules: Mapping[str, Module], *, chunk_length: int, vocab_size: int,
                      emphasis: str = "original") -> DeployedClipTextEncoder:  # fmt: skip
    """Factory of a ``ClipTextEncoder``'s deployment (module ``text_encoder``)."""
    return DeployedClipTextEncoder(modules["text_encoder"], chunk_length, vocab_size, emphasis)
