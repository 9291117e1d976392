"""Engine components of DALL-E Mini: text encoder, KV-cached token predictor, detokenizer."""

from __future__ import annotations

from typing import Any

import torch

from t2i.contracts import TOKENS, KVCache
from t2i.payloads import Conditioning, Image, Latent, Tokens
from t2i_dalle.mini.bart import IMAGE_VOCAB, START_TOKEN, TEXT_PAD


class MiniTextEncoder:
    """Text ids -> BART encoder states; the mask marks non-pad tokens (cross-attention)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def __call__(self, tokens: Tokens) -> Conditioning:
        device = self.encoder.embed_tokens.weight.device
        ids = tokens.ids.to(device)
        with torch.inference_mode():
            states = self.encoder(ids)
        return Conditioning(states, None, ids.ne(TEXT_PAD))

    def export_spec(self):
        """``text_encoder``: ids -> encoder states (:mod:`t2i_dalle.mini.export`)."""
        from t2i_dalle.mini.export import text_encoder_spec

        return text_encoder_spec(self.encoder)


class MiniTokenPredictor:
    """``(tokens, cond, cache) -> (logits over 2**14 image tokens, cache)``; bos ``2**14 - 1``."""

    model_contract = TOKENS
    vocab_size = IMAGE_VOCAB
    bos = START_TOKEN

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder

    def export_spec(self):
        """``decoder_prefill`` and ``decoder_decode``, the KV cache as explicit inputs and
        outputs (:mod:`t2i_dalle.mini.export`)."""
        from t2i_dalle.mini.export import predictor_spec

        return predictor_spec(self.decoder)

    def __call__(
        self, tokens: torch.Tensor, cond: Conditioning | None, cache: KVCache | None
    ) -> tuple[torch.Tensor, KVCache]:
        if cache is None and (cond is None or cond.mask is None):
            raise ValueError("DALL-E Mini's decoder needs the encoder states and their mask")
        states = None if cache is not None else cond.embeds
        mask = None if cache is not None else cond.mask
        logits, cache = self.decoder(tokens, states, mask, cache)
        return logits[:, -1, :IMAGE_VOCAB], cache


class MiniDetokenizer:
    """The VQGAN as the decoder of ``(B, 1, 16, 16)`` grids -> 256 px images in [0, 1]."""

    factor, channels, grid = 16, 1, 16

    def __init__(self, detokenizer: Any) -> None:
        self.detokenizer = detokenizer

    def export_spec(self):
        """``vqgan_decoder``: tokens (negative: undrawn) -> image (:mod:`t2i_dalle.mini.export`)."""
        from t2i_dalle.mini.export import detokenizer_spec

        return detokenizer_spec(self.detokenizer, self.grid)

    def decode(self, latent: Latent) -> Image:
        s = latent.samples
        if s.ndim != 4 or s.shape[1] != 1 or tuple(s.shape[2:]) != (self.grid, self.grid):
            raise ValueError(
                f"DALL-E Mini's VQGAN decodes (B, 1, 16, 16) token grids, got {tuple(s.shape)}"
            )
        device = self.detokenizer.embedding.weight.device
        return Image(self.detokenizer(s[:, 0].to(device).long()).float())

    def decode_preview(self, latent: Latent) -> Image:
        """:meth:`decode` of a partly drawn grid (``UNDRAWN`` positions: the mean code)."""
        s = latent.samples
        if s.ndim != 4 or s.shape[1] != 1:
            raise ValueError(f"the VQGAN previews (B, 1, h, w) token grids, got {tuple(s.shape)}")
        device = self.detokenizer.embedding.weight.device
        return Image(self.detokenizer.preview(s[:, 0].to(device).long()).float())
