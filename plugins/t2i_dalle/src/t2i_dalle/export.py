"""Export specs of the DALL-E family (:class:`t2i.contracts.ExportSpec`, issue 17).

Boundaries (what each exported model computes; :mod:`t2i_dalle.deployed` rebuilds the
components around them with none of this module's model code):

- ``text_encoder``: ``ids (B, T) int64 -> text_states (B, T, width)``, the transformer's text
  embedding (:meth:`~t2i_dalle.transformer.DalleTransformer.embed_text`);
- ``transformer_prefill``: ``text_states (B, T, width), stream (B, S) int64 -> logits
  (B, image_vocab), present.{i}.key, present.{i}.value (B, heads, T + S, head_dim)`` per layer:
  the first :meth:`~t2i_dalle.transformer.DalleTransformer.step` (``cache=None``), the KV cache
  as explicit outputs;
- ``transformer_decode``: ``token (B, 1) int64, position () int64 (the token's sequence
  position, the cache's length), past_key_values.{i}.key / .value (B, heads, P, head_dim) ->
  logits, present.{i}.key / .value (B, heads, P + 1, head_dim)``: one later step;
- ``dvae_decoder``: ``codes (B, vocab, h, w)`` one-hot (or mixed, the live preview) code maps
  -> ``image (B, 3, h f, w f)`` in [0, 1] (:meth:`~t2i_dalle.dvae.Decoder.pixels`);
- ``dvae_encoder``: ``image (B, 3, H, W)`` in [0, 1] -> ``logits (B, vocab, H/f, W/f)``, whose
  argmax over channels is :meth:`~t2i_dalle.dvae.Encoder.tokens` (the img2img side).

Batch and the image stream / cache lengths are dynamic axes (Optimum's ``past_key_values`` /
``present`` names), so super-conditioning (the ``[cond; uncond]`` batch) and any prompt batch
run through the same graphs. The wrappers run the transformer's own submodules in the order
:meth:`Block.forward` does, with the attention kind of each layer fixed at export (full:
causal on the prefill, unmasked for one token; row / column / conv: the layer's mask rows of
the positions being computed, read from the full mask by position).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from t2i.contracts import Deployment, ExportedModule, ExportSpec
from t2i_dalle.dvae import map_pixels
from t2i_dalle.transformer import DalleTransformer, attention_mask
from t2i_kernels.attention import attention

BATCH = "batch_size"


def _layer_masks(transformer: DalleTransformer) -> list[torch.Tensor | None]:
    c = transformer.config
    kinds = itertools.cycle(c.attn_types)
    device = transformer.head.weight.device
    return [attention_mask(c, next(kinds), device) for _ in transformer.blocks]


def _block(block: nn.Module, x, rows, past_k, past_v, causal: bool):
    """:meth:`t2i_dalle.transformer.Block.forward` with the cache as tensors: ``rows`` are
    the mask rows of ``x``'s positions (None: full attention), ``past_k`` / ``past_v`` the
    layer's cache before ``x`` (None on the prefill). Returns ``(x, k, v)``."""
    b, s, w = x.shape
    q, k, v = block.qkv(block.ln_1(x)).view(b, s, 3, block.heads, -1).permute(2, 0, 3, 1, 4)
    if past_k is not None:
        k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
    if rows is not None:
        out = attention(q, k, v, attn_mask=rows[:, : k.shape[2]])
    elif causal:
        out = attention(q, k, v, causal=True)
    else:
        out = attention(q, k, v)
    x = x + block.proj(out.transpose(1, 2).reshape(b, s, w))
    return x + block.mlp(block.ln_2(x)), k, v


def _image_embed(t: DalleTransformer, stream: torch.Tensor, index: torch.Tensor):
    g = t.config.grid
    return t.image_embed(stream) + t.row_embed(index // g) + t.col_embed(index % g)


class TextEmbedding(nn.Module):
    """``ids (B, T) -> (B, T, width)``: :meth:`DalleTransformer.embed_text`."""

    def __init__(self, transformer: DalleTransformer) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.transformer.embed_text(ids)


class Prefill(nn.Module):
    """The first step: ``(text_states, stream) -> (logits, k_0, v_0, k_1, v_1, ...)``."""

    def __init__(self, transformer: DalleTransformer) -> None:
        super().__init__()
        self.transformer = transformer
        self.masks = _layer_masks(transformer)

    def forward(self, text_states: torch.Tensor, stream: torch.Tensor):
        t = self.transformer
        index = torch.arange(stream.shape[1], device=stream.device)
        x = torch.cat([text_states.to(t.head.weight.dtype), _image_embed(t, stream, index)], 1)
        n = x.shape[1]
        present = []
        for block, mask in zip(t.blocks, self.masks):
            rows = None if mask is None else mask[:n]
            x, k, v = _block(block, x, rows, None, None, causal=True)
            present += [k, v]
        h = t.ln_f(x)
        return (t.head(h[:, -1])[..., t.config.text_vocab :], *present)


class Decode(nn.Module):
    """One later step: ``(token, position, k_0, v_0, ...) -> (logits, k_0, v_0, ...)``."""

    def __init__(self, transformer: DalleTransformer) -> None:
        super().__init__()
        self.transformer = transformer
        self.masks = _layer_masks(transformer)

    def forward(self, token: torch.Tensor, position: torch.Tensor, *past: torch.Tensor):
        t = self.transformer
        index = (position - t.config.text_len).reshape(1)
        x = _image_embed(t, token, index)
        present = []
        for i, (block, mask) in enumerate(zip(t.blocks, self.masks)):
            rows = None if mask is None else mask.index_select(0, position.reshape(1))
            x, k, v = _block(block, x, rows, past[2 * i], past[2 * i + 1], causal=False)
            present += [k, v]
        h = t.ln_f(x)
        return (t.head(h[:, -1])[..., t.config.text_vocab :], *present)


class DVAEPixels(nn.Module):
    """``codes (B, vocab, h, w) -> image (B, 3, h f, w f)``: :meth:`Decoder.pixels`."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder.pixels(codes)


class DVAELogits(nn.Module):
    """``image (B, 3, H, W)`` in [0, 1] -> the encoder's logits (argmax: the tokens)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(map_pixels(image))


def _kv_names(prefix: str, depth: int) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}.{kv}" for i in range(depth) for kv in ("key", "value"))


def text_encoder_spec(transformer: DalleTransformer) -> ExportSpec:
    c = transformer.config
    ids = torch.randint(
        0, c.text_vocab, (2, c.text_len), generator=torch.Generator().manual_seed(0)
    )
    module = ExportedModule(
        "text_encoder", TextEmbedding(transformer), (ids.to(transformer.head.weight.device),),
        ("ids",), ("text_states",), {"ids": {0: BATCH}, "text_states": {0: BATCH}},
    )  # fmt: skip
    options = {"text_len": c.text_len, "text_vocab": c.text_vocab, "width": c.width}
    return ExportSpec((module,), deployment=Deployment("t2i_dalle.deployed:text_encoder", options))


def predictor_spec(transformer: DalleTransformer) -> ExportSpec:
    """``transformer_prefill`` and ``transformer_decode`` (see the module docstring)."""
    c = transformer.config
    weight = transformer.head.weight
    gen = torch.Generator().manual_seed(0)
    batch, stream_len = 2, 3
    states = torch.randn(batch, c.text_len, c.width, generator=gen).to(weight)
    stream = torch.randint(0, c.image_vocab, (batch, stream_len), generator=gen)
    stream[:, 0] = transformer.image_bos
    stream = stream.to(weight.device)
    present = _kv_names("present", c.depth)
    time = {0: BATCH, 2: "total_sequence_length"}
    prefill = ExportedModule(
        "transformer_prefill", Prefill(transformer), (states, stream),
        ("text_states", "stream"), ("logits", *present),
        {"text_states": {0: BATCH}, "stream": {0: BATCH, 1: "stream_length"},
         "logits": {0: BATCH}, **{n: time for n in present}},
    )  # fmt: skip
    past_len = c.text_len + stream_len
    head_dim = c.width // c.heads
    past_names = _kv_names("past_key_values", c.depth)
    past = tuple(
        0.5 * torch.randn(batch, c.heads, past_len, head_dim, generator=gen).to(weight)
        for _ in past_names
    )
    token = torch.randint(0, c.image_vocab, (batch, 1), generator=gen).to(weight.device)
    position = torch.tensor(past_len, device=weight.device)
    decode = ExportedModule(
        "transformer_decode", Decode(transformer), (token, position, *past),
        ("token", "position", *past_names), ("logits", *present),
        {"token": {0: BATCH}, "logits": {0: BATCH},
         **{n: {0: BATCH, 2: "past_sequence_length"} for n in past_names},
         **{n: time for n in present}},
    )  # fmt: skip
    options = {
        "vocab_size": c.image_vocab,
        "bos": transformer.image_bos,
        "grid": c.grid,
        "text_len": c.text_len,
        "width": c.width,
        "depth": c.depth,
    }
    deployment = Deployment("t2i_dalle.deployed:token_predictor", options)
    return ExportSpec((prefill, decode), deployment=deployment)


def dvae_spec(encoder: Any, decoder: Any, grid: int | None) -> ExportSpec:
    """``dvae_decoder`` (code maps -> image) and ``dvae_encoder`` (image -> logits)."""
    c = decoder.config
    weight = decoder.blocks.input.w
    gen = torch.Generator().manual_seed(0)
    side = grid or 4
    tokens = torch.randint(0, c.vocab_size, (2, side, side), generator=gen)
    codes = torch.nn.functional.one_hot(tokens, c.vocab_size).permute(0, 3, 1, 2).to(weight)
    spatial = {0: BATCH, 2: "height", 3: "width"}
    modules = [
        ExportedModule(
            "dvae_decoder",
            DVAEPixels(decoder),
            (codes,),
            ("codes",),
            ("image",),
            {"codes": spatial, "image": spatial},
        )
    ]
    if encoder is not None:
        pixels = torch.rand(2, encoder.config.channels, side * c.factor, side * c.factor,
                            generator=gen).to(encoder.blocks.input.w)  # fmt: skip
        modules.append(
            ExportedModule(
                "dvae_encoder",
                DVAELogits(encoder),
                (pixels,),
                ("image",),
                ("logits",),
                {"image": spatial, "logits": spatial},
            )
        )
    options = {"factor": c.factor, "vocab_size": c.vocab_size, "grid": grid}
    return ExportSpec(modules, deployment=Deployment("t2i_dalle.deployed:dvae_decoder", options))
