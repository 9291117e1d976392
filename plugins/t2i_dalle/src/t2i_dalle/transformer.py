"""DALL-E's transformer: decoder-only over ``[text tokens | image tokens]`` (Ramesh et al. 2021).

Sequence layout (``T`` text positions, ``N = grid x grid`` image positions, ``T + N`` in all)::

    text:  t_0 = <bos>, t_1 .. t_{T-1}   (caption words, <eos>, <pad> ...)
    image: <img-bos>, z_0 .. z_{N-2}     (the input at image index j predicts cell j)

- Text positions get a learned text position embedding; image index ``j`` gets a row and a
  column embedding of cell ``j`` (DALL-E's separate, axial image position embedding).
- One head gives ``text_vocab + image_vocab`` logits; the logits mask keeps the text slice for
  text positions (predicting ``t_{i+1}``) and the image slice for image positions, so a text
  position never predicts an image token nor the reverse.
- Loss ``(CE_text + w CE_image) / (1 + w)`` with ``w = 7`` (DALL-E's 1:7).
- Attention: causal; per layer ``attn_types`` cycles ``full`` / ``row`` / ``column`` / ``conv``.
  The sparse kinds restrict image -> image attention (text stays visible to every image
  position): ``row`` sees earlier cells of the predicted cell's row, ``column`` earlier cells of
  its column, ``conv`` earlier cells within a ``conv_kernel`` window; every kind also sees the
  previous token and <img-bos>. All through :func:`t2i_kernels.attention.attention`.
- Inference keeps a :class:`~t2i.contracts.KVCache` (keys / values per layer, time axis 2):
  each new token costs one position's attention against the cache. Or, for the compiled token
  loop, a :class:`~t2i_dalle.static_cache.StaticKVCache` (preallocated to the sequence length,
  written in place at tensor positions; each step attends over the whole length with the mask
  of the written positions): every decode step then has the same shapes, so
  :meth:`DalleTransformer.decode` is one graph under ``torch.compile(fullgraph=True)``, and
  so is :meth:`~DalleTransformer.forward` (teacher forcing). The layers' attention masks are
  non-persistent buffers (not in the state dict), so a traced graph reads them as inputs.
"""

from __future__ import annotations

import functools
import itertools

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from t2i.contracts import KVCache
from t2i_dalle.static_cache import StaticKVCache
from t2i_kernels.attention import attention

ATTN_TYPES = ("full", "row", "column", "conv")


@attrs.frozen
class TransformerConfig:
    """Shape of a DALL-E transformer; ``dalle-shapes``' numbers are in its JSON."""

    text_vocab: int
    text_len: int
    image_vocab: int
    grid: int
    width: int = 256
    depth: int = 8
    heads: int = 4
    mlp_ratio: int = 4
    attn_types: tuple[str, ...] = attrs.field(default=("full",), converter=tuple)
    conv_kernel: int = 5
    loss_img_weight: float = 7.0

    def __attrs_post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}")
        bad = [a for a in self.attn_types if a not in ATTN_TYPES]
        if bad or not self.attn_types:
            raise ValueError(f"attn_types must be some of {ATTN_TYPES}, got {self.attn_types}")
        if self.conv_kernel % 2 != 1:
            raise ValueError(f"conv_kernel must be odd, got {self.conv_kernel}")

    @property
    def image_len(self) -> int:
        return self.grid * self.grid

    @property
    def seq_len(self) -> int:
        return self.text_len + self.image_len


@functools.lru_cache(maxsize=16)
def _mask_cpu(kind: str, text_len: int, grid: int, kernel: int) -> torch.Tensor | None:
    """Bool ``(L, L)`` attention mask (True = attend) of one kind, or None for ``full``."""
    if kind == "full":
        return None
    n, t = grid * grid, text_len
    total = t + n
    mask = torch.ones(total, total).tril().bool()
    j = torch.arange(n)[:, None]  # the cell each image query predicts
    i = torch.arange(n)[None, :]  # image key index; its content is cell i - 1 (i = 0: img-bos)
    c = i - 1
    rq, cq, rk, ck = j // grid, j % grid, c.div(grid, rounding_mode="floor"), c % grid
    if kind == "row":
        keep = rk == rq
    elif kind == "column":
        keep = ck == cq
    else:
        h = kernel // 2
        keep = ((rk - rq).abs() <= h) & ((ck - cq).abs() <= h)
    keep = (keep & (c < j)) | (i == j) | (i == 0)  # earlier cells, the previous token, img-bos
    mask[t:, t:] = keep & (i <= j)
    return mask


def attention_mask(config: TransformerConfig, kind: str, device) -> torch.Tensor | None:
    m = _mask_cpu(kind, config.text_len, config.grid, config.conv_kernel)
    return None if m is None else m.to(device)


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))``, ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None,
        start: int,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        """``x`` at sequence positions ``start ..``; ``cache`` (a growing one) is extended."""
        b, s, _ = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        total = k.shape[2]
        if mask is not None:
            out = attention(q, k, v, attn_mask=mask[start : start + s, :total])
        elif s == total:
            out = attention(q, k, v, causal=True)
        elif s == 1:
            out = attention(q, k, v)
        else:  # several new tokens after a cache: causal, bottom-right aligned
            keep = torch.ones(s, total, dtype=torch.bool, device=x.device).tril(total - s)
            out = attention(q, k, v, attn_mask=keep)
        return self._finish(x, out)

    def static(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None,
        positions: torch.Tensor,
        cache: StaticKVCache,
        layer: int,
    ) -> torch.Tensor:
        """``x`` at the sequence ``positions`` ``(S,)`` (a tensor): its keys / values are
        written into ``cache`` there, and it attends over the cache's whole length."""
        b, s, _ = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        k, v = cache.write(layer, k, v, positions)
        if mask is None:
            keep = cache.visible(positions)
        else:  # the kind's mask is causal: its rows already hide the positions not written yet
            keep = mask.index_select(0, positions)[:, : cache.max_len]
        return self._finish(x, attention(q, k, v, attn_mask=keep))

    def _finish(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        b, s, w = x.shape
        x = x + self.proj(out.transpose(1, 2).reshape(b, s, w))
        return x + self.mlp(self.ln_2(x))


class DalleTransformer(nn.Module):
    """The transformer; :meth:`loss` trains it, :meth:`step` runs it with a KV cache.

    ``compile_methods`` (:func:`t2i.engine.compile_component`): the static-cache entry
    points :meth:`prefill` and :meth:`decode`, besides ``forward``.
    """

    compile_methods = ("prefill", "decode")

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.text_embed = nn.Embedding(c.text_vocab, c.width)
        self.text_pos = nn.Embedding(c.text_len, c.width)
        self.image_embed = nn.Embedding(c.image_vocab + 1, c.width)  # the last is <img-bos>
        self.row_embed = nn.Embedding(c.grid, c.width)
        self.col_embed = nn.Embedding(c.grid, c.width)
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.ln_f = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.text_vocab + c.image_vocab)
        self.apply(_init)
        kinds = itertools.cycle(c.attn_types)
        self.layer_kinds = tuple(next(kinds) for _ in range(c.depth))
        for kind in sorted(set(c.attn_types) - {"full"}):
            mask = _mask_cpu(kind, c.text_len, c.grid, c.conv_kernel).clone()
            self.register_buffer(f"mask_{kind}", mask, persistent=False)

    @property
    def image_bos(self) -> int:
        return self.config.image_vocab

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` text ids -> ``(B, T, width)`` (token + text position embedding)."""
        c = self.config
        if text.ndim != 2 or text.shape[1] != c.text_len:
            raise ValueError(f"text must be (B, {c.text_len}) ids, got {tuple(text.shape)}")
        pos = torch.arange(c.text_len, device=text.device)
        return self.text_embed(text) + self.text_pos(pos)

    def embed_image(self, stream: torch.Tensor, start: int) -> torch.Tensor:
        """Image-stream inputs (``<img-bos>`` then tokens) at image indices ``start ..``."""
        self._check_image_index(start, stream.shape[1])
        idx = torch.arange(start, start + stream.shape[1], device=stream.device)
        return self.embed_image_at(stream, idx)

    def _check_image_index(self, start: int, count: int) -> None:
        last = start + count - 1  # Python ints (static shapes): no tensor read when traced
        if last >= self.config.image_len:
            raise ValueError(f"image index {last} beyond the grid's {self.config.image_len}")

    def embed_image_at(self, stream: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """:meth:`embed_image` at the image indices ``index`` ``(S,)`` (a tensor, unchecked)."""
        g = self.config.grid
        return self.image_embed(stream) + self.row_embed(index // g) + self.col_embed(index % g)

    def _masks(self) -> list[torch.Tensor | None]:
        return [getattr(self, f"mask_{k}", None) for k in self.layer_kinds]

    def run(self, x: torch.Tensor, start: int, cache: KVCache | None) -> torch.Tensor:
        """Hidden states ``(B, S, width)`` at sequence positions ``start ..`` -> final states."""
        for layer, (block, mask) in enumerate(zip(self.blocks, self._masks())):
            x = block(x, mask=mask, start=start, cache=cache, layer=layer)
        return self.ln_f(x)

    def run_static(
        self, x: torch.Tensor, positions: torch.Tensor, cache: StaticKVCache
    ) -> torch.Tensor:
        """:meth:`run` at the sequence ``positions`` (a tensor) with a static cache."""
        for layer, (block, mask) in enumerate(zip(self.blocks, self._masks())):
            x = block.static(x, mask=mask, positions=positions, cache=cache, layer=layer)
        return self.ln_f(x)

    def forward(self, text: torch.Tensor, image: torch.Tensor):
        """Teacher forcing: ``(text logits (B, T-1, Vt), image logits (B, N, Vi))``."""
        c = self.config
        if image.ndim != 2 or image.shape[1] != c.image_len:
            raise ValueError(f"image must be (B, {c.image_len}) tokens, got {tuple(image.shape)}")
        bos = torch.full_like(image[:, :1], self.image_bos)
        stream = torch.cat([bos, image[:, :-1]], 1)
        x = torch.cat([self.embed_text(text), self.embed_image(stream, 0)], 1)
        h = self.run(x, 0, None)
        text_logits = self.head(h[:, : c.text_len - 1])[..., : c.text_vocab]
        image_logits = self.head(h[:, c.text_len :])[..., c.text_vocab :]
        return text_logits, image_logits

    def loss(self, text: torch.Tensor, image: torch.Tensor, text_pad: int | None = None):
        """``(CE_text + w CE_image) / (1 + w)`` and its two parts (pad targets ignored)."""
        text_logits, image_logits = self(text, image)
        target = text[:, 1:]
        if text_pad is not None:
            target = target.masked_fill(target == text_pad, -100)
        ce_text = F.cross_entropy(text_logits.flatten(0, 1).float(), target.flatten())
        ce_image = F.cross_entropy(image_logits.flatten(0, 1).float(), image.flatten())
        w = self.config.loss_img_weight
        return (ce_text + w * ce_image) / (1 + w), ce_text.detach(), ce_image.detach()

    def step(
        self,
        stream: torch.Tensor,
        text_states: torch.Tensor | None,
        cache: KVCache | StaticKVCache | None,
    ) -> tuple[torch.Tensor, KVCache | StaticKVCache]:
        """Next image-token logits ``(B, image_vocab)`` and the cache.

        First call: ``cache=None`` (a growing :class:`~t2i.contracts.KVCache` is made) or an
        empty :class:`StaticKVCache` (:meth:`new_cache`), ``text_states`` the embedded text
        ``(B, T, width)`` and ``stream`` ``(B, S)`` (``<img-bos>`` and any priming tokens).
        Later calls: the tokens not yet in the cache; ``text_states`` is not read.
        """
        if isinstance(cache, StaticKVCache):
            return self._static_step(stream, text_states, cache), cache
        c = self.config
        if cache is None:
            if text_states is None:
                raise ValueError("the first step needs the embedded text")
            cache = KVCache(time_dim=2)
            x = torch.cat([text_states.to(self.head.weight.dtype), self.embed_image(stream, 0)], 1)
            start = 0
        else:
            start = cache.length
            x = self.embed_image(stream, start - c.text_len)
        h = self.run(x, start, cache)
        return self.head(h[:, -1])[..., c.text_vocab :], cache

    def new_cache(self, batch: int, max_len: int | None = None) -> StaticKVCache:
        """An empty static cache of ``max_len`` positions (default: the whole sequence, text
        and image) on this model's device, in its dtype."""
        c, weight = self.config, self.head.weight
        max_len = c.seq_len if max_len is None else max_len
        if not 0 < max_len <= c.seq_len:
            raise ValueError(f"max_len must be in 1 .. {c.seq_len}, got {max_len}")
        return StaticKVCache.allocate(
            c.depth, batch, c.heads, max_len, c.width // c.heads,
            device=weight.device, dtype=weight.dtype,
        )  # fmt: skip

    def _static_step(
        self, stream: torch.Tensor, text_states: torch.Tensor | None, cache: StaticKVCache
    ) -> torch.Tensor:
        """:meth:`step` on a static cache: :meth:`prefill` when it is empty, else
        :meth:`decode`; the bounds are checked here, on Python ints, outside both."""
        c = self.config
        if cache.length == 0:
            if text_states is None:
                raise ValueError("the first step needs the embedded text")
            self._check_image_index(0, stream.shape[1])
            positions = cache.positions(c.text_len + stream.shape[1])
            logits = self.prefill(text_states, stream, positions, cache)
        else:
            self._check_image_index(cache.length - c.text_len, stream.shape[1])
            positions = cache.positions(stream.shape[1])
            logits = self.decode(stream, positions, cache)
        cache.advance(int(positions.shape[0]))
        return logits

    def prefill(
        self,
        text_states: torch.Tensor,
        stream: torch.Tensor,
        positions: torch.Tensor,
        cache: StaticKVCache,
    ) -> torch.Tensor:
        """The first static step: ``text_states`` ``(B, T, width)`` and ``stream`` ``(B, S)``
        written at ``positions`` (``0 .. T + S - 1``) -> next-token logits ``(B, image_vocab)``."""
        c = self.config
        index = positions[c.text_len :] - c.text_len
        text = text_states.to(self.head.weight.dtype)
        x = torch.cat([text, self.embed_image_at(stream, index)], 1)
        h = self.run_static(x, positions, cache)
        return self.head(h[:, -1])[..., c.text_vocab :]

    def decode(
        self, stream: torch.Tensor, positions: torch.Tensor, cache: StaticKVCache
    ) -> torch.Tensor:
        """A later static step: ``stream`` ``(B, S)`` image tokens at the sequence
        ``positions`` ``(S,)`` (unchecked; the cache holds every earlier one) -> logits
        ``(B, image_vocab)``. Shapes do not depend on the position: one graph per ``S``."""
        c = self.config
        x = self.embed_image_at(stream, positions - c.text_len)
        h = self.run_static(x, positions, cache)
        return self.head(h[:, -1])[..., c.text_vocab :]


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
