"""DALL-E Mini's BART encoder and decoder in min-dalle's parameter layout.

- Attention: bias-free ``q/k/v/out_proj``, queries scaled by ``1/sqrt(head_dim)``; masks are
  boolean (True = attend), through :func:`t2i_kernels.attention.attention`.
- GLU feed-forward: ``fc2(ln1(gelu(fc0(ln0(x))) * fc1(ln0(x))))``, bias-free linears.
- Encoder layer: ``x + ln_post(attn(ln_pre(x)))``, then ``x + glu(x)``; token + position
  embeddings, ``layernorm_embedding`` first and ``final_ln`` last. Text pad id 1 is masked.
- Decoder layer: self-attention (causal, KV-cached), cross-attention to the encoder states
  (each with pre/post LayerNorms), GLU; ``lm_head`` (no bias) to ``image_vocab + 1`` logits,
  of which the first ``2**14`` are image tokens; the start token is ``2**14 - 1``.

The decoder keeps its state in a :class:`~t2i.contracts.KVCache`: entry ``2 i`` holds layer
``i``'s self-attention keys/values (one position per drawn token), entry ``2 i + 1`` its
cross-attention keys/values of the encoder states, computed once on the first step (min-dalle
recomputes them at every step); the cache also carries the text mask.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

from t2i.contracts import KVCache
from t2i_kernels.attention import attention

TEXT_PAD = 1
IMAGE_TOKENS = 256
IMAGE_VOCAB = 2**14
START_TOKEN = 2**14 - 1


@attrs.frozen
class BartConfig:
    """Shape of DALL-E Mini (the default) or Mega (24 layers, 32 heads, 2048, 4096)."""

    layers: int = 12
    heads: int = 16
    embed: int = 1024
    glu: int = 2730
    text_vocab: int = 50264
    image_vocab: int = 16384
    text_len: int = 64


class GLU(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gelu = nn.GELU()
        self.ln0, self.ln1 = nn.LayerNorm(width), nn.LayerNorm(hidden)
        self.fc0 = nn.Linear(width, hidden, bias=False)
        self.fc1 = nn.Linear(width, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln0(x)
        return self.fc2(self.ln1(self.gelu(self.fc0(x)) * self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention; ``project(x)`` gives heads ``(B, H, T, D)``."""

    def __init__(self, heads: int, width: int) -> None:
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.q_proj = nn.Linear(width, width, bias=False)
        self.out_proj = nn.Linear(width, width, bias=False)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        return x.view(b, t, self.heads, w // self.heads).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.k_proj(x)), self.split(self.v_proj(x))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None, causal=False):
        q = self.split(self.q_proj(x))
        out = attention(q, k, v, attn_mask=mask, causal=causal)
        b, h, t, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * d))


class EncoderLayer(nn.Module):
    def __init__(self, c: BartConfig) -> None:
        super().__init__()
        self.pre_self_attn_layer_norm = nn.LayerNorm(c.embed)
        self.self_attn = Attention(c.heads, c.embed)
        self.self_attn_layer_norm = nn.LayerNorm(c.embed)
        self.glu = GLU(c.embed, c.glu)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.pre_self_attn_layer_norm(x)
        h = self.self_attn.attend(h, *self.self_attn.keys_values(h), mask=mask)
        x = x + self.self_attn_layer_norm(h)
        return x + self.glu(x)


class BartEncoder(nn.Module):
    """Text ids ``(B, text_len)`` (pad 1) -> states ``(B, text_len, embed)``."""

    def __init__(self, c: BartConfig) -> None:
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.text_vocab, c.embed)
        self.embed_positions = nn.Embedding(c.text_len, c.embed)
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.layers))
        self.layernorm_embedding = nn.LayerNorm(c.embed)
        self.final_ln = nn.LayerNorm(c.embed)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 2 or ids.shape[1] > self.config.text_len:
            raise ValueError(
                f"text ids must be (B, <= {self.config.text_len}), got {tuple(ids.shape)}"
            )
        mask = ids.ne(TEXT_PAD)[:, None, None, :]
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.layernorm_embedding(self.embed_tokens(ids) + self.embed_positions(pos))
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_ln(x)


class DecoderLayer(nn.Module):
    def __init__(self, c: BartConfig) -> None:
        super().__init__()
        self.pre_self_attn_layer_norm = nn.LayerNorm(c.embed)
        self.self_attn = Attention(c.heads, c.embed)
        self.self_attn_layer_norm = nn.LayerNorm(c.embed)
        self.pre_encoder_attn_layer_norm = nn.LayerNorm(c.embed)
        self.encoder_attn = Attention(c.heads, c.embed)
        self.encoder_attn_layer_norm = nn.LayerNorm(c.embed)
        self.glu = GLU(c.embed, c.glu)

    def forward(self, x, *, self_kv, cross_kv, text_mask, causal: bool) -> torch.Tensor:
        h = self.pre_self_attn_layer_norm(x)
        h = self.self_attn.attend(h, *self_kv(self.self_attn.keys_values(h)), causal=causal)
        x = x + self.self_attn_layer_norm(h)
        h = self.pre_encoder_attn_layer_norm(x)
        h = self.encoder_attn.attend(h, *cross_kv(self.encoder_attn), mask=text_mask)
        x = x + self.encoder_attn_layer_norm(h)
        return x + self.glu(x)


class BartDecoder(nn.Module):
    """Image tokens -> next-token logits, attending to the encoder states; KV-cached."""

    def __init__(self, c: BartConfig) -> None:
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.image_vocab + 1, c.embed)
        self.embed_positions = nn.Embedding(IMAGE_TOKENS, c.embed)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.layers))
        self.layernorm_embedding = nn.LayerNorm(c.embed)
        self.final_ln = nn.LayerNorm(c.embed)
        self.lm_head = nn.Linear(c.embed, c.image_vocab + 1, bias=False)

    def forward(
        self,
        tokens: torch.Tensor,
        states: torch.Tensor | None,
        text_mask: torch.Tensor | None,
        cache: KVCache | None,
    ) -> tuple[torch.Tensor, KVCache]:
        """``tokens`` ``(B, S)`` at positions ``cache.length ..`` -> logits ``(B, S, V+1)``.

        The first call (``cache=None``) needs the encoder ``states`` and ``text_mask``
        ``(B, T)`` (True = a real token); later calls read the cached cross keys/values.
        """
        first = cache is None
        if first:
            if states is None or text_mask is None:
                raise ValueError("the first decoder step needs the encoder states and text mask")
            cache = MaskedCache(time_dim=2, mask=text_mask.bool()[:, None, None, :])
        elif tokens.shape[1] != 1:
            raise ValueError("after the first step the decoder takes one token at a time")
        start = cache.length
        if start + tokens.shape[1] > IMAGE_TOKENS:
            raise ValueError(
                f"DALL-E Mini draws {IMAGE_TOKENS} tokens; position {start} is past it"
            )
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.layernorm_embedding(self.embed_tokens(tokens) + self.embed_positions(pos))
        for i, layer in enumerate(self.layers):

            def self_kv(kv, i=i):
                return cache.extend(2 * i, *kv)

            def cross_kv(attn, i=i, dtype=x.dtype):
                if first:
                    cache.extend(2 * i + 1, *attn.keys_values(states.to(dtype)))
                return cache.keys[2 * i + 1], cache.values[2 * i + 1]

            x = layer(x, self_kv=self_kv, cross_kv=cross_kv, text_mask=cache.mask,
                      causal=first and tokens.shape[1] > 1)  # fmt: skip
        return self.lm_head(self.final_ln(x)), cache


@attrs.define(eq=False)
class MaskedCache(KVCache):
    """A :class:`KVCache` that also carries the text mask of the cross-attention."""

    mask: torch.Tensor | None = None

    def repeat(self, times: int) -> KVCache:
        base = super().repeat(times)
        mask = None if self.mask is None else self.mask.repeat(times, 1, 1, 1)
        return MaskedCache(base.keys, base.values, base.time_dim, mask=mask)
