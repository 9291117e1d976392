"""DALL-E Mini's components rebuilt around exported models (:class:`t2i.contracts.Deployment`).

The factories take one callable per model of :mod:`t2i_dalle.mini.export` and the options its
specs recorded; this module imports none of the family's model code (no
:mod:`t2i_dalle.mini.bart`, :mod:`~t2i_dalle.mini.vqgan`, :mod:`~t2i_dalle.mini.checkpoint`):
the core and the plain-Python BPE tokenizer (:mod:`t2i_dalle.mini.tokenizer`) only.

- :func:`tokenizer`: the BPE tokenizer from the vocabulary and merges in the manifest;
- :func:`text_encoder`: ``text_encoder`` as :class:`~t2i_dalle.mini.components.MiniTextEncoder`;
- :func:`token_predictor`: ``decoder_prefill`` on the first call, ``decoder_decode`` after, the
  cache laid out as the torch decoder's (entry ``2 i``: layer ``i``'s self-attention keys /
  values, ``2 i + 1``: its cross-attention keys / values) plus the text mask;
- :func:`detokenizer`: ``vqgan_decoder`` for decode and the live preview.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch

from t2i.contracts import TOKENS, KVCache
from t2i.payloads import Conditioning, Image, Latent, Tokens

Module = Callable[..., Any]


def tokenizer(modules: Mapping[str, Module], *, vocab: dict, merges: Sequence, text_len: int):
    """Factory of ``dalle-mini.bpe``'s deployment (no model)."""
    from t2i_dalle.mini.tokenizer import BPETokenizer

    return BPETokenizer(vocab, [tuple(m) for m in merges], text_len)


class DeployedMiniTextEncoder:
    """Text ids -> BART encoder states through the exported ``text_encoder``."""

    def __init__(self, encoder: Module, text_len: int, text_vocab: int, pad: int) -> None:
        self.encoder, self.text_len, self.text_vocab, self.pad = encoder, text_len, text_vocab, pad

    def __call__(self, tokens: Tokens) -> Conditioning:
        ids = tokens.ids
        if ids.ndim != 2 or ids.shape[1] != self.text_len:
            raise ValueError(f"text ids must be (B, {self.text_len}), got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.text_vocab):
            raise ValueError(f"text ids must be in [0, {self.text_vocab}): wrong tokenizer")
        with torch.no_grad():
            states = self.encoder(ids.long())
        return Conditioning(states, None, ids.ne(self.pad))


def text_encoder(modules: Mapping[str, Module], *, text_len: int, text_vocab: int, pad: int):
    """Factory of ``dalle-mini.encoder``'s deployment (model ``text_encoder``)."""
    return DeployedMiniTextEncoder(modules["text_encoder"], text_len, text_vocab, pad)


@attrs.define(eq=False)
class DeployedCache(KVCache):
    """The deployed decoder's :class:`KVCache` with the text mask ``(B, T)`` of its rows."""

    text_mask: torch.Tensor | None = None

    def repeat(self, times: int) -> KVCache:
        base = super().repeat(times)
        mask = None if self.text_mask is None else self.text_mask.repeat(times, 1)
        return DeployedCache(base.keys, base.values, base.time_dim, text_mask=mask)


class DeployedMiniTokenPredictor:
    """:class:`~t2i.contracts.TokenPredictor` over ``decoder_prefill`` / ``decoder_decode``."""

    model_contract = TOKENS

    def __init__(self, prefill: Module, decode: Module, *, vocab_size: int, bos: int,
                 layers: int, text_len: int, embed: int, image_tokens: int) -> None:  # fmt: skip
        self.prefill, self.decode = prefill, decode
        self.vocab_size, self.bos, self.layers = vocab_size, bos, layers
        self.text_len, self.embed, self.image_tokens = text_len, embed, image_tokens

    def to(self, device=None, dtype=None) -> DeployedMiniTokenPredictor:
        return self

    def _check_position(self, start: int, length: int) -> None:
        if start + length > self.image_tokens:
            raise ValueError(
                f"DALL-E Mini draws {self.image_tokens} tokens; position {start} is past it"
            )

    def __call__(
        self, tokens: torch.Tensor, cond: Conditioning | None, cache: KVCache | None
    ) -> tuple[torch.Tensor, KVCache]:
        tokens = tokens.long()
        if cache is None:
            if cond is None or cond.mask is None:
                raise ValueError("DALL-E Mini's decoder needs the encoder states and their mask")
            if cond.embeds.shape[1:] != (self.text_len, self.embed):
                raise ValueError(
                    f"encoder states of shape {tuple(cond.embeds.shape[1:])} do not fit this "
                    f"decoder ({self.text_len}, {self.embed}): use its own text encoder"
                )
            self._check_position(0, tokens.shape[1])
            mask = cond.mask.bool()
            with torch.no_grad():
                logits, *kv = self.prefill(cond.embeds.float(), mask, tokens)
            cache = DeployedCache(list(kv[0::2]), list(kv[1::2]), time_dim=2, text_mask=mask)
            return logits, cache
        if tokens.shape[1] != 1:
            raise ValueError("after the first step the decoder takes one token at a time")
        if len(cache.keys) != 2 * self.layers or getattr(cache, "text_mask", None) is None:
            raise ValueError("not this deployed decoder's cache")
        self._check_position(cache.length, 1)
        past = [t for kv in zip(cache.keys, cache.values) for t in kv]
        position = torch.tensor(cache.length, dtype=torch.long)
        with torch.no_grad():
            logits, *kv = self.decode(tokens, position, cache.text_mask, *past)
        for i in range(self.layers):  # the self-attention entries grow; cross ones stay
            cache.keys[2 * i], cache.values[2 * i] = kv[2 * i], kv[2 * i + 1]
        return logits, cache


def token_predictor(modules: Mapping[str, Module], **options: Any) -> DeployedMiniTokenPredictor:
    """Factory of ``dalle-mini.decoder``'s deployment (``decoder_prefill``, ``_decode``)."""
    return DeployedMiniTokenPredictor(
        modules["decoder_prefill"], modules["decoder_decode"], **options
    )


class DeployedMiniDetokenizer:
    """:class:`~t2i_dalle.mini.components.MiniDetokenizer` over ``vqgan_decoder``."""

    channels = 1

    def __init__(self, net: Module, *, codebook: int, grid: int, factor: int) -> None:
        self.net, self.codebook, self.grid, self.factor = net, codebook, grid, factor

    @torch.no_grad()
    def decode(self, latent: Latent) -> Image:
        s = latent.samples
        if s.ndim != 4 or s.shape[1] != 1 or tuple(s.shape[2:]) != (self.grid, self.grid):
            raise ValueError(
                f"DALL-E Mini's VQGAN decodes (B, 1, {self.grid}, {self.grid}) token grids, got "
                f"{tuple(s.shape)}"
            )
        tokens = s[:, 0].long()
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook):
            raise ValueError(f"VQGAN tokens must be in [0, {self.codebook})")
        return Image(self.net(tokens).float())

    @torch.no_grad()
    def decode_preview(self, latent: Latent) -> Image:
        s = latent.samples
        if s.ndim != 4 or s.shape[1] != 1:
            raise ValueError(f"the VQGAN previews (B, 1, h, w) token grids, got {tuple(s.shape)}")
        tokens = s[:, 0].long()
        if tokens.numel() and int(tokens.max()) >= self.codebook:
            raise ValueError(f"the preview takes (B, h, w) tokens below {self.codebook}")
        return Image(self.net(tokens).float())


def detokenizer(modules: Mapping[str, Module], *, codebook: int, grid: int, factor: int):
    """Factory of ``dalle-mini.vqgan``'s deployment (model ``vqgan_decoder``)."""
    return DeployedMiniDetokenizer(
        modules["vqgan_decoder"], codebook=codebook, grid=grid, factor=factor
    )
