"""The engine components of a DALL-E model folder: tokenizer, text embedding, token predictor,
dVAE decoder, and image priming.

- :class:`DalleTextEncoder`: word ids -> the transformer's text states (token + text position
  embeddings) as :class:`~t2i.payloads.Conditioning` ``embeds`` ``(B, T, width)``; the
  predictor reads them as the prefix of its first step.
- :class:`DalleTokenPredictor`: a :class:`~t2i.contracts.TokenPredictor` over the image
  codebook (``bos`` is <img-bos>) with the transformer's KV cache: a growing
  :class:`~t2i.contracts.KVCache` (the default, eager), or with ``static_cache`` a
  preallocated :class:`~t2i_dalle.static_cache.StaticKVCache`, one shape for every step, which
  :meth:`DalleTokenPredictor.compile_token_loop` (which ``Pipeline.compile`` calls) turns on (the
  compiled token loop: one prefill graph and
  one decode graph for every token and seed).
- :class:`DVAETokenDecoder`: ``(B, 1, h, w)`` token grids -> images, and images -> token grids
  (``encode``: the img2img side, whose tokens prime the sampler); ``decode_preview`` shows a
  partly drawn grid (the live preview), each undrawn position the codebook's mean.
- :class:`PrimedPredictor`: DALL-E's image-prompt completion; the first ``rows`` rows of the
  grid are forced to an init image's tokens (its logits put all mass on the given token,
  in finite numbers so that logit guidance passes them through unchanged), the rest is drawn.
"""

from __future__ import annotations

from typing import Any

import torch

from t2i.contracts import TOKENS, KVCache
from t2i.payloads import Conditioning, Image, Latent, Tokens
from t2i_dalle.static_cache import StaticKVCache

FORCED_LOGIT = -1e4
"""The logit of every token but the forced one (softmax gives it exactly 0 in fp32)."""


class DalleTextEncoder:
    """Word ids -> the transformer's embedded text (the prefix of every image)."""

    def __init__(self, transformer: Any) -> None:
        self.transformer = transformer

    def __call__(self, tokens: Tokens) -> Conditioning:
        param = self.transformer.head.weight
        with torch.inference_mode():
            states = self.transformer.embed_text(tokens.ids.to(param.device))
        return Conditioning(states, None, tokens.mask)

    def export_spec(self):
        """``text_encoder``: ids -> text states (:mod:`t2i_dalle.export`)."""
        from t2i_dalle.export import text_encoder_spec

        return text_encoder_spec(self.transformer)


class DalleTokenPredictor:
    """``(tokens, cond, cache) -> (logits over the codebook, cache)`` of the DALL-E transformer."""

    model_contract = TOKENS

    def __init__(self, transformer: Any, *, static_cache: bool = False) -> None:
        self.transformer = transformer
        self.vocab_size = transformer.config.image_vocab
        self.bos = transformer.image_bos
        self.grid = transformer.config.grid
        self.static_cache = static_cache

    def compile_token_loop(
        self, *, backend: str = "inductor", mode: str | None = None, **options: Any
    ) -> list[str]:
        """The fast path of the token loop: turn ``static_cache`` on and compile the
        transformer in place (:func:`t2i.engine.compile_component`: ``forward``, ``prefill``,
        ``decode``); ``options`` go to it. Returns the compiled calls' names."""
        from t2i.engine import compile_component

        self.static_cache = True
        return compile_component(self, backend=backend, mode=mode, **options)

    def to(self, device=None, dtype=None) -> DalleTokenPredictor:
        self.transformer.to(device=device, dtype=dtype)
        return self

    def export_spec(self):
        """``transformer_prefill`` and ``transformer_decode``, the KV cache as explicit inputs
        and outputs (:mod:`t2i_dalle.export`)."""
        from t2i_dalle.export import predictor_spec

        return predictor_spec(self.transformer)

    def __call__(
        self,
        tokens: torch.Tensor,
        cond: Conditioning | None,
        cache: KVCache | StaticKVCache | None,
    ) -> tuple[torch.Tensor, KVCache | StaticKVCache]:
        """Next-token logits; the first call (``cache=None``) starts a growing cache, or an
        empty static one of the whole sequence's length with ``static_cache``."""
        if cache is None:
            if cond is None:
                raise ValueError("the DALL-E transformer needs the prompt's text states")
            width = self.transformer.config.width
            if cond.embeds.shape[1:] != (self.transformer.config.text_len, width):
                raise ValueError(
                    f"text states of shape {tuple(cond.embeds.shape[1:])} do not fit this "
                    f"transformer ({self.transformer.config.text_len}, {width}): use its "
                    "own tokenizer and text encoder"
                )
            if self.static_cache:
                cache = self.transformer.new_cache(tokens.shape[0])
            return self.transformer.step(tokens, cond.embeds, cache)
        return self.transformer.step(tokens, None, cache)


class DVAETokenDecoder:
    """The dVAE as the engine's decoder of token grids (``factor`` pixels per token)."""

    channels = 1

    def __init__(self, encoder: Any, decoder: Any, grid: int | None = None) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.factor = decoder.config.factor
        self.vocab_size = decoder.config.vocab_size
        self.grid = grid

    def check_grid(self, h: int, w: int) -> None:
        if self.grid is not None and (h, w) != (self.grid, self.grid):
            side = self.grid * self.factor
            raise ValueError(
                f"a {h}x{w} token grid does not match this model's {self.grid}x{self.grid} "
                f"(its images are {side}x{side} px): use width={side} height={side}"
            )

    def export_spec(self):
        """``dvae_decoder`` (code maps -> image) and ``dvae_encoder`` (image -> logits)."""
        from t2i_dalle.export import dvae_spec

        return dvae_spec(self.encoder, self.decoder, self.grid)

    def decode(self, latent: Latent) -> Image:
        samples = latent.samples
        if samples.ndim != 4 or samples.shape[1] != 1:
            raise ValueError(
                f"the dVAE decodes (B, 1, h, w) token grids, got {tuple(samples.shape)}"
            )
        self.check_grid(*samples.shape[2:])
        param = self.decoder.blocks.input.w
        return Image(self.decoder.images(samples[:, 0].to(param.device).long()).float())

    def decode_preview(self, latent: Latent) -> Image:
        """:meth:`decode` of a partly drawn grid (``UNDRAWN`` positions: the codebook's mean)."""
        samples = latent.samples
        if samples.ndim != 4 or samples.shape[1] != 1:
            raise ValueError(
                f"the dVAE decodes (B, 1, h, w) token grids, got {tuple(samples.shape)}"
            )
        tokens = samples[:, 0].to(self.decoder.blocks.input.w.device).long()
        return Image(self.decoder.preview_images(tokens).float())

    def encode(self, image: Image) -> Latent:
        param = self.encoder.blocks.input.w
        pixels = image.pixels.to(param.device, param.dtype)
        return Latent(self.encoder.tokens(pixels)[:, None].float())


class PrimedPredictor:
    """A token predictor whose first ``len(prime)`` tokens are forced to ``prime``."""

    model_contract = TOKENS

    def __init__(self, inner: Any, prime: torch.Tensor) -> None:
        if prime.ndim != 2:
            raise ValueError(f"prime tokens must be (B, P), got {tuple(prime.shape)}")
        self.inner, self.prime = inner, prime.long()
        self.vocab_size, self.bos = inner.vocab_size, inner.bos
        self.drawn = 0

    def __call__(self, tokens, cond, cache):
        if cache is None:
            self.drawn = 0
        logits, cache = self.inner(tokens, cond, cache)
        step, self.drawn = self.drawn, self.drawn + 1
        if step < self.prime.shape[1]:
            rows = self.prime[torch.arange(logits.shape[0]) % self.prime.shape[0], step]
            forced = torch.full_like(logits, FORCED_LOGIT)
            logits = forced.scatter(1, rows[:, None].to(logits.device), 0.0)
        return logits, cache
