"""Export specs of DALL-E Mini / Mega (``dalle-mini``; issue 17).

Boundaries (:mod:`t2i_dalle.mini.deployed` rebuilds the components around them with none of
this module's model code):

- ``text_encoder``: ``ids (B, T) int64 -> encoder_hidden_states (B, T, embed)`` (BART encoder,
  pad id 1 masked inside);
- ``decoder_prefill``: ``encoder_hidden_states, text_mask (B, T) bool, tokens (B, S) int64 ->
  logits (B, 2**14)`` of the last position, ``present.{i}.decoder.key / .value`` (self
  attention, ``(B, heads, S, head_dim)``) and ``present.{i}.encoder.key / .value`` (the cross
  attention's keys / values of the encoder states, computed once): the first step of
  :class:`~t2i_dalle.mini.bart.BartDecoder`;
- ``decoder_decode``: ``token (B, 1), position () int64 (the cache's length), text_mask,
  past_key_values.{i}.decoder.key / .value (B, heads, P, head_dim), past_key_values.{i}.
  encoder.key / .value -> logits, present.{i}.decoder.key / .value (P + 1)``: a later step
  (the encoder keys / values are inputs only, as Optimum's decoder-with-past);
- ``vqgan_decoder``: ``tokens (B, h, w) int64 -> image (B, 3, 16 h, 16 w)`` in [0, 1]; a
  negative token (``UNDRAWN``) reads the mean code (the live preview), so decode and preview
  are the same graph (:meth:`~t2i_dalle.mini.vqgan.VQGANDetokenizer.preview`).

The wrappers call the decoder layers' own ``forward`` with the cache's tensors in place of
the :class:`~t2i_dalle.mini.bart.MaskedCache`.
"""

from __future__ import annotations

import torch
from torch import nn

from t2i.contracts import Deployment, ExportedModule, ExportSpec
from t2i_dalle.mini.bart import IMAGE_TOKENS, IMAGE_VOCAB, START_TOKEN, TEXT_PAD

BATCH = "batch_size"


def _run_layers(decoder, x, states, mask, past, causal):
    """The decoder layers over ``x``; ``past`` (None on the prefill) holds per layer the self
    keys, values and the cross keys, values. Returns ``(logits, present)``."""
    present = []
    for i, layer in enumerate(decoder.layers):
        mine: list[torch.Tensor] = []

        def self_kv(kv, i=i, mine=mine):
            k, v = kv
            if past is not None:
                k, v = torch.cat([past[4 * i], k], 2), torch.cat([past[4 * i + 1], v], 2)
            mine[:] = [k, v]
            return k, v

        def cross_kv(attn, i=i, mine=mine, dtype=x.dtype):
            if past is not None:
                return past[4 * i + 2], past[4 * i + 3]
            k, v = attn.keys_values(states.to(dtype))
            mine.extend([k, v])
            return k, v

        x = layer(x, self_kv=self_kv, cross_kv=cross_kv, text_mask=mask, causal=causal)
        present += mine
    return decoder.lm_head(decoder.final_ln(x))[:, -1, :IMAGE_VOCAB], present


class Encoder(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(ids)


class Prefill(nn.Module):
    """The first step: ``(states, text_mask, tokens) -> (logits, sk_0, sv_0, ck_0, cv_0, ...)``."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, states, text_mask, tokens):
        d = self.decoder
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = d.layernorm_embedding(d.embed_tokens(tokens) + d.embed_positions(pos))
        mask = text_mask.bool()[:, None, None, :]
        logits, present = _run_layers(d, x, states, mask, None, causal=True)
        return (logits, *present)


class Decode(nn.Module):
    """One later step: ``(token, position, text_mask, sk_0, sv_0, ck_0, cv_0, ...) -> (logits,
    sk_0, sv_0, sk_1, ...)``."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, token, position, text_mask, *past):
        d = self.decoder
        x = d.layernorm_embedding(d.embed_tokens(token) + d.embed_positions(position.reshape(1)))
        mask = text_mask.bool()[:, None, None, :]
        logits, present = _run_layers(d, x, None, mask, past, causal=False)
        return (logits, *present)


class Detokenize(nn.Module):
    """``tokens (B, h, w)`` (negative: not drawn) -> ``(B, 3, 16 h, 16 w)`` in [0, 1]."""

    def __init__(self, detokenizer: nn.Module) -> None:
        super().__init__()
        self.detokenizer = detokenizer

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.detokenizer.preview(tokens)


def text_encoder_spec(encoder) -> ExportSpec:
    c = encoder.config
    ids = torch.randint(
        4, c.text_vocab, (2, c.text_len), generator=torch.Generator().manual_seed(0)
    )
    ids[:, 0], ids[1, c.text_len // 2 :] = 0, TEXT_PAD
    axes = {"ids": {0: BATCH}, "encoder_hidden_states": {0: BATCH}}
    module = ExportedModule(
        "text_encoder", Encoder(encoder), (ids.to(encoder.embed_tokens.weight.device),),
        ("ids",), ("encoder_hidden_states",), axes,
    )  # fmt: skip
    options = {"text_len": c.text_len, "text_vocab": c.text_vocab, "pad": TEXT_PAD}
    deployment = Deployment("t2i_dalle.mini.deployed:text_encoder", options)
    return ExportSpec((module,), deployment=deployment)


def _names(prefix: str, layers: int, cross: bool) -> tuple[str, ...]:
    parts = ("decoder", "encoder") if cross else ("decoder",)
    return tuple(f"{prefix}.{i}.{p}.{kv}" for i in range(layers) for p in parts
                 for kv in ("key", "value"))  # fmt: skip


def predictor_spec(decoder) -> ExportSpec:
    """``decoder_prefill`` and ``decoder_decode`` (see the module docstring)."""
    c = decoder.config
    weight = decoder.lm_head.weight
    gen = torch.Generator().manual_seed(0)
    batch, length, head_dim = 2, 3, c.embed // c.heads
    states = torch.randn(batch, c.text_len, c.embed, generator=gen).to(weight)
    mask = torch.ones(batch, c.text_len, dtype=torch.bool)
    mask[1, c.text_len // 2 :] = False
    tokens = torch.randint(0, IMAGE_VOCAB, (batch, length), generator=gen)
    tokens[:, 0] = START_TOKEN
    tokens, mask = tokens.to(weight.device), mask.to(weight.device)
    present = _names("present", c.layers, cross=True)
    self_present = _names("present", c.layers, cross=False)
    total = {0: BATCH, 2: "total_sequence_length"}
    text = {0: BATCH}
    prefill = ExportedModule(
        "decoder_prefill", Prefill(decoder), (states, mask, tokens),
        ("encoder_hidden_states", "text_mask", "tokens"), ("logits", *present),
        {"encoder_hidden_states": text, "text_mask": text, "tokens": {0: BATCH, 1: "length"},
         "logits": text,
         **{n: (total if ".decoder." in n else text) for n in present}},
    )  # fmt: skip
    past_names = _names("past_key_values", c.layers, cross=True)
    past = []
    for name in past_names:
        time = length if ".decoder." in name else c.text_len
        past.append(0.5 * torch.randn(batch, c.heads, time, head_dim, generator=gen).to(weight))
    token = torch.randint(0, IMAGE_VOCAB, (batch, 1), generator=gen).to(weight.device)
    position = torch.tensor(length, device=weight.device)
    past_axes = {0: BATCH, 2: "past_sequence_length"}
    decode = ExportedModule(
        "decoder_decode", Decode(decoder), (token, position, mask, *past),
        ("token", "position", "text_mask", *past_names), ("logits", *self_present),
        {"token": text, "text_mask": text, "logits": text,
         **{n: (past_axes if ".decoder." in n else text) for n in past_names},
         **{n: total for n in self_present}},
    )  # fmt: skip
    options = {
        "vocab_size": IMAGE_VOCAB, "bos": START_TOKEN, "layers": c.layers,
        "text_len": c.text_len, "embed": c.embed, "image_tokens": IMAGE_TOKENS,
    }  # fmt: skip
    deployment = Deployment("t2i_dalle.mini.deployed:token_predictor", options)
    return ExportSpec((prefill, decode), deployment=deployment)


def detokenizer_spec(detokenizer, grid: int) -> ExportSpec:
    c = detokenizer.config
    tokens = torch.randint(
        0, c.codebook, (1, grid, grid), generator=torch.Generator().manual_seed(0)
    )
    tokens[0, grid // 2 :] = -1  # UNDRAWN: the preview's mean code
    spatial = {0: BATCH, 1: "height", 2: "width"}
    module = ExportedModule(
        "vqgan_decoder", Detokenize(detokenizer),
        (tokens.to(detokenizer.embedding.weight.device),), ("tokens",), ("image",),
        {"tokens": spatial, "image": {0: BATCH, 2: "image_height", 3: "image_width"}},
    )  # fmt: skip
    options = {"codebook": c.codebook, "grid": grid, "factor": 16}
    deployment = Deployment("t2i_dalle.mini.deployed:detokenizer", options)
    return ExportSpec((module,), deployment=deployment)
