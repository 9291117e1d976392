"""DALL-E components rebuilt around exported models (:class:`t2i.contracts.Deployment`).

A deployment runtime (ONNX Runtime, :mod:`t2i_onnx.runtime`) calls these factories with one
callable per exported model (torch tensors in and out, the boundaries of
:mod:`t2i_dalle.export`) and the JSON options the component's ``export_spec()`` recorded. This
module imports none of the family's model code (no :mod:`t2i_dalle.transformer`,
:mod:`t2i_dalle.dvae`, checkpoint loading): only the core and :mod:`t2i_dalle.text` (the
word tokenizer, plain Python).

- :func:`word_tokenizer`: the ``dalle.words`` tokenizer from the vocabulary in the manifest;
- :func:`text_encoder`: ``text_encoder`` as :class:`~t2i_dalle.components.DalleTextEncoder`;
- :func:`token_predictor`: ``transformer_prefill`` on the first call (``cache=None``), then
  ``transformer_decode`` per token, the :class:`~t2i.contracts.KVCache` holding the models'
  ``present`` tensors; so the core's sampler, super-conditioning (the ``[c; u]`` batch) and
  image priming (:class:`~t2i_dalle.components.PrimedPredictor`) run unchanged;
- :func:`dvae_decoder`: ``dvae_decoder`` / ``dvae_encoder`` as
  :class:`~t2i_dalle.components.DVAETokenDecoder` (decode, the live preview, encode).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from t2i.contracts import TOKENS, KVCache
from t2i.payloads import Conditioning, Image, Latent, Tokens

Module = Callable[..., Any]


def word_tokenizer(modules: Mapping[str, Module], *, words: Sequence[str], text_len: int):
    """Factory of ``dalle.words``' deployment (no model: the vocabulary travels as options)."""
    from t2i_dalle.text import WordTokenizer

    return WordTokenizer(words, text_len)


class DeployedDalleTextEncoder:
    """Word ids -> the transformer's text states through the exported ``text_encoder``."""

    def __init__(self, embed: Module, text_len: int, text_vocab: int) -> None:
        self.embed, self.text_len, self.text_vocab = embed, text_len, text_vocab

    def __call__(self, tokens: Tokens) -> Conditioning:
        ids = tokens.ids
        if ids.ndim != 2 or ids.shape[1] != self.text_len:
            raise ValueError(f"text must be (B, {self.text_len}) ids, got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.text_vocab):
            raise ValueError(f"text ids must be in [0, {self.text_vocab}): wrong tokenizer")
        with torch.no_grad():
            states = self.embed(ids.long())
        return Conditioning(states, None, tokens.mask)


def text_encoder(modules: Mapping[str, Module], *, text_len: int, text_vocab: int, width: int):
    """Factory of ``dalle.text``'s deployment (model ``text_encoder``)."""
    return DeployedDalleTextEncoder(modules["text_encoder"], text_len, text_vocab)


class DeployedDalleTokenPredictor:
    """:class:`~t2i.contracts.TokenPredictor` over ``transformer_prefill`` /
    ``transformer_decode``: the cache's keys / values are the models' ``present`` outputs."""

    model_contract = TOKENS

    def __init__(self, prefill: Module, decode: Module, *, vocab_size: int, bos: int,
                 grid: int, text_len: int, width: int, depth: int) -> None:  # fmt: skip
        self.prefill, self.decode = prefill, decode
        self.vocab_size, self.bos, self.grid = vocab_size, bos, grid
        self.text_len, self.width, self.depth = text_len, width, depth

    def to(self, device=None, dtype=None) -> DeployedDalleTokenPredictor:
        return self  # the sessions' placement is the runtime's (execution provider)

    def _check_stream(self, start: int, length: int) -> None:
        last = start + length - 1
        if last >= self.grid * self.grid:
            raise ValueError(f"image index {last} beyond the grid's {self.grid * self.grid}")

    def _cache(self, cache: KVCache | None, outputs: Sequence[torch.Tensor]) -> KVCache:
        keys, values = list(outputs[0::2]), list(outputs[1::2])
        if cache is None:
            return KVCache(keys, values, time_dim=2)
        cache.keys[:], cache.values[:] = keys, values  # in place, as the torch cache grows
        return cache

    def __call__(
        self, tokens: torch.Tensor, cond: Conditioning | None, cache: KVCache | None
    ) -> tuple[torch.Tensor, KVCache]:
        tokens = tokens.long()
        if cache is None:
            if cond is None:
                raise ValueError("the DALL-E transformer needs the prompt's text states")
            if cond.embeds.shape[1:] != (self.text_len, self.width):
                raise ValueError(
                    f"text states of shape {tuple(cond.embeds.shape[1:])} do not fit this "
                    f"transformer ({self.text_len}, {self.width}): use its own tokenizer and "
                    "text encoder"
                )
            self._check_stream(0, tokens.shape[1])
            with torch.no_grad():
                logits, *kv = self.prefill(cond.embeds.float(), tokens)
            return logits, self._cache(None, kv)
        if len(cache.keys) != self.depth:
            raise ValueError(f"a cache of {len(cache.keys)} layers; this model has {self.depth}")
        self._check_stream(cache.length - self.text_len, tokens.shape[1])
        logits = None
        for i in range(tokens.shape[1]):  # one exported step per token not yet cached
            past = [t for kv in zip(cache.keys, cache.values) for t in kv]
            position = torch.tensor(cache.length, dtype=torch.long)
            with torch.no_grad():
                logits, *kv = self.decode(tokens[:, i : i + 1], position, *past)
            cache = self._cache(cache, kv)
        return logits, cache


def token_predictor(modules: Mapping[str, Module], **options: Any) -> DeployedDalleTokenPredictor:
    """Factory of ``dalle.transformer``'s deployment (``transformer_prefill``, ``_decode``)."""
    return DeployedDalleTokenPredictor(
        modules["transformer_prefill"], modules["transformer_decode"], **options
    )


class DeployedDVAETokenDecoder:
    """:class:`~t2i_dalle.components.DVAETokenDecoder` over ``dvae_decoder`` (code maps ->
    pixels) and ``dvae_encoder`` (pixels -> logits; img2img)."""

    channels = 1

    def __init__(self, decoder: Module, encoder: Module | None, *, factor: int,
                 vocab_size: int, grid: int | None) -> None:  # fmt: skip
        self.dvae_decoder, self.dvae_encoder = decoder, encoder
        self.factor, self.vocab_size, self.grid = factor, vocab_size, grid

    def check_grid(self, h: int, w: int) -> None:
        if self.grid is not None and (h, w) != (self.grid, self.grid):
            side = self.grid * self.factor
            raise ValueError(
                f"a {h}x{w} token grid does not match this model's {self.grid}x{self.grid} "
                f"(its images are {side}x{side} px): use width={side} height={side}"
            )

    def _tokens(self, latent: Latent) -> torch.Tensor:
        samples = latent.samples
        if samples.ndim != 4 or samples.shape[1] != 1:
            raise ValueError(
                f"the dVAE decodes (B, 1, h, w) token grids, got {tuple(samples.shape)}"
            )
        return samples[:, 0].long()

    def _maps(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.one_hot(tokens.clamp(min=0), self.vocab_size).permute(0, 3, 1, 2).float()

    @torch.no_grad()
    def decode(self, latent: Latent) -> Image:
        tokens = self._tokens(latent)
        self.check_grid(*tokens.shape[1:])
        v = self.vocab_size
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= v):
            raise ValueError(
                f"tokens must be in [0, {v}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        return Image(self.dvae_decoder(self._maps(tokens)).float())

    @torch.no_grad()
    def decode_preview(self, latent: Latent) -> Image:
        """A partly drawn grid: undrawn positions read the codebook's mean (1 / vocab each)."""
        tokens = self._tokens(latent)
        if tokens.numel() and int(tokens.max()) >= self.vocab_size:
            raise ValueError(f"tokens must be below {self.vocab_size}, got {int(tokens.max())}")
        maps = self._maps(tokens)
        drawn = (tokens >= 0)[:, None]
        maps = torch.where(drawn, maps, torch.full_like(maps, 1.0 / self.vocab_size))
        return Image(self.dvae_decoder(maps).float())

    @torch.no_grad()
    def encode(self, image: Image) -> Latent:
        if self.dvae_encoder is None:
            raise ValueError("this export has no dvae_encoder: image priming needs it")
        logits = self.dvae_encoder(image.pixels.float())
        return Latent(logits.argmax(1)[:, None].float())


def dvae_decoder(modules: Mapping[str, Module], *, factor: int, vocab_size: int,
                 grid: int | None) -> DeployedDVAETokenDecoder:  # fmt: skip
    """Factory of ``dalle.dvae``'s deployment (models ``dvae_decoder``, ``dvae_encoder``)."""
    return DeployedDVAETokenDecoder(
        modules["dvae_decoder"], modules.get("dvae_encoder"), factor=factor,
        vocab_size=vocab_size, grid=grid,
    )  # fmt: skip
