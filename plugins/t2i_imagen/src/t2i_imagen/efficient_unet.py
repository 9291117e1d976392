"""The Efficient U-Net of Imagen (Saharia et al. 2022, appendix B.1, figures A.27-A.30).

What makes it "efficient", all three from the paper (and NVIDIA NeMo's description):

1. parameters shifted to low resolution: more residual blocks (and wider ones) at the coarse
   levels (``EfficientUNetConfig.blocks``), fewer at the fine ones;
2. skip connections scaled by ``1/sqrt(2)`` before they are concatenated in the UBlock;
3. the DBlock downsamples *before* its convolutions, the UBlock upsamples *after* them, so
   the residual blocks of a level run at its coarse resolution.

Conditioning, as Imagen's: sinusoidal timestep embedding -> MLP; the text's token states
(frozen encoder, with their padding mask) enter by cross-attention at the levels that ask
for it, and a pooled text vector (the encoder's own, plus an attention pooling of the
tokens, both projected) is added to the time embedding, which every residual block reads as
a FiLM scale and shift. A super-resolution model (``noise_conditioning=True``) also embeds
the augmentation level of its low-resolution input and adds it to the time embedding.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch import nn

SKIP_SCALE = 2**-0.5
"""Imagen's skip-connection scale."""


@attrs.frozen
class EfficientUNetConfig:
    """Architecture of an :class:`EfficientUNet`; one entry per level in the tuples.

    Attributes:
        in_channels: 3 (base) or 6 (super-resolution: the sample and the upsampled low-res).
        out_channels: 3 (eps / v / x0 prediction).
        stem_channels: width of the full-resolution stem convolution.
        channels: width of each level.
        blocks: residual blocks per level (more at low resolution).
        strides: 1 or 2 per level: the DBlock's downsampling factor (level 0 often 1).
        cross_attention: levels whose blocks attend to the text tokens.
        self_attention: levels with self-attention over the feature map.
        text_dim: width of the text encoder's token states (MiniLM: 384).
        pooled_dim: width of its pooled vector (0: none).
        attention_pool: add an attention pooling of the tokens to the time embedding.
        heads: attention heads.
        noise_conditioning: embed the low-res augmentation level (super-resolution).
        groups: GroupNorm groups.
    """

    in_channels: int = 3
    out_channels: int = 3
    stem_channels: int = 64
    channels: tuple[int, ...] = (64, 128, 256)
    blocks: tuple[int, ...] = (1, 2, 4)
    strides: tuple[int, ...] = (1, 2, 2)
    cross_attention: tuple[bool, ...] = (False, True, True)
    self_attention: tuple[bool, ...] = (False, False, True)
    text_dim: int = 384
    pooled_dim: int = 384
    attention_pool: bool = True
    heads: int = 4
    noise_conditioning: bool = False
    groups: int = 16

    def __attrs_post_init__(self) -> None:
        n = len(self.channels)
        for name in ("blocks", "strides", "cross_attention", "self_attention"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"EfficientUNetConfig.{name} needs {n} entries (one per level)")
        if any(s not in (1, 2) for s in self.strides):
            raise ValueError(f"strides must be 1 or 2, got {self.strides}")
        for c in (self.stem_channels, *self.channels):
            if c % self.groups or c % self.heads:
                raise ValueError(f"channels {c} must divide by groups and heads")

    @property
    def time_dim(self) -> int:
        return 4 * self.stem_channels

    @property
    def factor(self) -> int:
        """Total downsampling: sizes must be multiples of it."""
        return math.prod(self.strides)

    def to_dict(self) -> dict:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EfficientUNetConfig:
        tuples = ("channels", "blocks", "strides", "cross_attention", "self_attention")
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of (fractional) timesteps (Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, FiLM of the time embedding, GroupNorm-SiLU-conv (zero-init), skip."""

    def __init__(self, cin: int, cout: int, time_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(time_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class Attention(nn.Module):
    """Multi-head attention of the feature map over itself and/or the text tokens.

    ``self_attention``: keys/values from the pixels; ``cross``: from the text (masked); both:
    the text tokens join the pixels as extra keys/values (Imagen's combined attention).
    """

    def __init__(
        self, channels: int, heads: int, text_dim: int, groups: int, *, self_attn: bool, cross: bool
    ):
        super().__init__()
        self.heads, self.self_attn, self.cross = heads, self_attn, cross
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels) if self_attn else None
        self.text_kv = nn.Linear(text_dim, 2 * channels) if cross else None
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wdt = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        keys, values, masks = [], [], []
        if self.kv is not None:
            k, v = self.kv(h).chunk(2, dim=-1)
            keys.append(k), values.append(v)
            masks.append(torch.ones(b, h.shape[1], dtype=torch.bool, device=x.device))
        if self.text_kv is not None:
            k, v = self.text_kv(text).chunk(2, dim=-1)
            keys.append(k), values.append(v), masks.append(mask)
        k, v, m = torch.cat(keys, 1), torch.cat(values, 1), torch.cat(masks, 1)
        out = F.scaled_dot_product_attention(
            self._split(self.q(h)), self._split(k), self._split(v), attn_mask=m[:, None, None, :]
        )
        out = self.out(out.transpose(1, 2).reshape(b, -1, c))
        return x + out.transpose(1, 2).reshape(b, c, hgt, wdt)


class Level(nn.Module):
    """Residual blocks of one resolution, each followed by its attention (if any)."""

    def __init__(self, cin: int, cout: int, n: int, cfg: EfficientUNetConfig, index: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(cin if i == 0 else cout, cout, cfg.time_dim, cfg.groups) for i in range(n)
        )
        sa, ca = cfg.self_attention[index], cfg.cross_attention[index]
        self.attns = nn.ModuleList(
            Attention(cout, cfg.heads, cfg.text_dim, cfg.groups, self_attn=sa, cross=ca)
            if (sa or ca)
            else nn.Identity()
            for _ in range(n)
        )

    def forward(self, x, temb, text, mask):
        for block, attn in zip(self.blocks, self.attns):
            x = block(x, temb)
            if not isinstance(attn, nn.Identity):
                x = attn(x, text, mask)
        return x


class TextPooling(nn.Module):
    """Pooled text for the time embedding: the encoder's vector and a masked attention pool.

    The attention pool (one learned query per head over the tokens, as Imagen's and GLIDE's
    pooled text embedding) and the projection are zero-initialised, so a fresh model starts
    from the time embedding alone.
    """

    def __init__(self, cfg: EfficientUNetConfig) -> None:
        super().__init__()
        self.pooled = nn.Linear(cfg.pooled_dim, cfg.time_dim) if cfg.pooled_dim else None
        self.attn = None
        if cfg.attention_pool:
            self.query = nn.Parameter(torch.randn(1, 1, cfg.text_dim) * cfg.text_dim**-0.5)
            self.attn = nn.MultiheadAttention(cfg.text_dim, cfg.heads, batch_first=True)
            self.attn_out = nn.Linear(cfg.text_dim, cfg.time_dim)
            nn.init.zeros_(self.attn_out.weight)

    def forward(self, text, mask, pooled) -> torch.Tensor | float:
        out: torch.Tensor | float = 0.0
        if self.pooled is not None:
            if pooled is None:
                raise ValueError("this Efficient U-Net reads a pooled text vector: none given")
            out = out + self.pooled(pooled.to(text.dtype))
        if self.attn is not None:
            q = self.query.expand(text.shape[0], -1, -1).to(text.dtype)
            out = out + self.attn_out(self._attention_pool(q, text, mask)[:, 0])
        return out

    def _attention_pool(self, q: torch.Tensor, text: torch.Tensor, mask: torch.Tensor):
        """``self.attn(q, text, text, key_padding_mask=~mask)`` written out with its weights:
        the same numbers, and a graph whose batch and token axes stay dynamic when traced
        (``nn.MultiheadAttention``'s traced reshapes keep the example's sizes)."""
        a, batch = self.attn, text.shape[0]
        heads, width = a.num_heads, a.embed_dim
        w_q, w_k, w_v = a.in_proj_weight.chunk(3)
        b_q, b_k, b_v = a.in_proj_bias.chunk(3)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, -1, heads, width // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(F.linear(q, w_q, b_q)),
            split(F.linear(text, w_k, b_k)),
            split(F.linear(text, w_v, b_v)),
            attn_mask=mask[:, None, None, :],
        )
        return a.out_proj(out.transpose(1, 2).reshape(batch, -1, width))


class EfficientUNet(nn.Module):
    """``(x, t, text, mask, pooled, noise_level) -> prediction`` of the same shape as x.

    Args of forward: ``x (B, in_channels, H, W)``; ``t (B,)`` timesteps; ``text (B, T,
    text_dim)`` token states and ``mask (B, T)`` bool (True = a real token); ``pooled (B,
    pooled_dim)`` or None; ``noise_level (B,)`` augmentation timesteps (SR models).
    """

    def __init__(self, config: EfficientUNetConfig) -> None:
        super().__init__()
        cfg = self.config = config
        td = cfg.time_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.stem_channels, td), nn.SiLU(), nn.Linear(td, td)
        )
        self.noise_mlp = (
            nn.Sequential(nn.Linear(cfg.stem_channels, td), nn.SiLU(), nn.Linear(td, td))
            if cfg.noise_conditioning
            else None
        )
        self.text_norm = nn.LayerNorm(cfg.text_dim)
        self.text_pool = TextPooling(cfg)
        self.stem = nn.Conv2d(cfg.in_channels, cfg.stem_channels, 3, padding=1)
        self.down_convs, self.down_levels = nn.ModuleList(), nn.ModuleList()
        self.up_levels, self.up_convs = nn.ModuleList(), nn.ModuleList()
        prev = cfg.stem_channels
        for i, (ch, n, stride) in enumerate(zip(cfg.channels, cfg.blocks, cfg.strides)):
            # DBlock: downsample first (Efficient U-Net), then the level's blocks
            self.down_convs.append(
                nn.Conv2d(prev, ch, 3, stride=2, padding=1) if stride == 2 else nn.Identity()
            )
            self.down_levels.append(Level(ch if stride == 2 else prev, ch, n, cfg, i))
            prev = ch
        for i in reversed(range(len(cfg.channels))):
            ch, stride = cfg.channels[i], cfg.strides[i]
            before = cfg.channels[i - 1] if i > 0 else cfg.stem_channels
            # UBlock: concatenate the scaled skip, the blocks, then upsample last
            self.up_levels.append(Level(prev + ch, ch, cfg.blocks[i], cfg, i))
            self.up_convs.append(nn.Conv2d(ch, before, 3, padding=1) if stride == 2 else None)
            prev = ch if stride == 1 else before
        self.out_norm = nn.GroupNorm(cfg.groups, prev)
        self.out = nn.Conv2d(prev, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def export_example(self, size: int = 32, tokens: int = 8, batch: int = 2):
        """``(input names, example inputs, dynamic axes)`` of :meth:`forward`: every input has a
        dynamic batch axis (batch 2 in the example, so a trace records no batch-of-one case)."""
        cfg, p = self.config, next(self.parameters())
        gen = torch.Generator().manual_seed(0)

        def r(*shape):
            return torch.randn(*shape, generator=gen).to(device=p.device, dtype=p.dtype)

        inputs = [r(batch, cfg.in_channels, size, size), torch.linspace(900.0, 100.0, batch)]
        inputs += [r(batch, tokens, cfg.text_dim)]
        mask = torch.ones(batch, tokens, dtype=torch.bool)
        mask[1:, tokens // 2 :] = False  # rows differ in length
        inputs.append(mask.to(p.device))
        names = ["sample", "timestep", "text", "mask"]
        if cfg.pooled_dim:
            inputs.append(r(batch, cfg.pooled_dim))
            names.append("pooled")
        if cfg.noise_conditioning:
            if not cfg.pooled_dim:
                inputs.append(None)
                names.append("pooled")
            inputs.append(torch.linspace(250.0, 50.0, batch).to(p.device))
            names.append("noise_level")
        axes = {n: {0: "batch"} for n, x in zip(names, inputs) if x is not None}
        axes.update(sample={0: "batch", 2: "height", 3: "width"}, text={0: "batch", 1: "tokens"})
        axes["mask"] = {0: "batch", 1: "tokens"}
        axes["out"] = {0: "batch", 2: "height", 3: "width"}
        return tuple(names), tuple(inputs), axes

    def _embed(self, t, text, mask, pooled, noise_level):
        temb = self.time_mlp(timestep_embedding(t, self.config.stem_channels).to(text.dtype))
        if self.noise_mlp is not None:
            if noise_level is None:
                raise ValueError("a super-resolution Efficient U-Net needs noise_level")
            level = timestep_embedding(noise_level, self.config.stem_channels).to(text.dtype)
            temb = temb + self.noise_mlp(level)
        return temb + self.text_pool(text, mask, pooled)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        mask: torch.Tensor,
        pooled: torch.Tensor | None = None,
        noise_level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        factor = self.config.factor
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"image sides must be multiples of {factor}, got {tuple(x.shape)}")
        mask = mask.bool()
        text = self.text_norm(text.to(x.dtype))
        temb = self._embed(t, text, mask, pooled, noise_level)
        h = self.stem(x)
        skips = []
        for conv, level in zip(self.down_convs, self.down_levels):
            h = level(conv(h), temb, text, mask)
            skips.append(h)
        for level, conv in zip(self.up_levels, self.up_convs):
            h = level(torch.cat([h, skips.pop() * SKIP_SCALE], 1), temb, text, mask)
            if conv is not None:
                h = conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))
