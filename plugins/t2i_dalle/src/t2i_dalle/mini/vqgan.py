"""The VQGAN detokenizer of DALL-E Mini / Mega in min-dalle's parameter layout.

Token grid ``(B, 16, 16)`` -> codebook embedding (``2**14 x 256``) -> ``post_quant_conv`` 1x1
-> decoder: ``conv_in`` 256 -> 512, a middle of resnet / attention / resnet at 512, then five
levels (applied from ``up.4`` down to ``up.0``) of three resnets each, ``up.4`` with attention
after each, ``up.4 .. up.1`` ending in nearest 2x upsampling and a 3x3 conv; GroupNorm(32) and
swish, ``conv_out`` to RGB. The image is ``clip(0, 1)`` (min-dalle then scales by 255).
Widths follow taming-transformers' f16 VQGAN: 512, 512, 256, 256, 128 from ``up.4`` to ``up.0``.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn


@attrs.frozen
class VQGANConfig:
    codebook: int = 2**14
    embed: int = 256
    widths: tuple[int, ...] = (128, 128, 256, 256, 512)  # up.0 .. up.4 outputs
    attention_levels: tuple[int, ...] = (4,)
    groups: int = 32


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, n_in)
        self.conv1 = nn.Conv2d(n_in, n_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, n_out)
        self.conv2 = nn.Conv2d(n_out, n_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(n_in, n_out, 1) if n_in != n_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(_swish(self.norm2(self.conv1(_swish(self.norm1(x))))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention over all cells (1x1 conv q/k/v/proj_out)."""

    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, width)
        self.q, self.k, self.v = (nn.Conv2d(width, width, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]  # (B, HW, C)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Upsample(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UpLevel(nn.Module):
    def __init__(self, n_in: int, n_out: int, attend: bool, upsample: bool, groups: int):
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(n_in if j == 0 else n_out, n_out, groups) for j in range(3)
        )
        self.attn = (
            nn.ModuleList(AttentionBlock(n_out, groups) for _ in range(3)) if attend else None
        )
        self.upsample = Upsample(n_out) if upsample else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if self.attn is not None:
                h = self.attn[j](h)
        return h if self.upsample is None else self.upsample(h)


class MiddleLayer(nn.Module):
    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(width, width, groups)
        self.attn_1 = AttentionBlock(width, groups)
        self.block_2 = ResnetBlock(width, width, groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class VQGANDecoder(nn.Module):
    def __init__(self, c: VQGANConfig) -> None:
        super().__init__()
        top = c.widths[-1]
        self.conv_in = nn.Conv2d(c.embed, top, 3, padding=1)
        self.mid = MiddleLayer(top, c.groups)
        levels = []
        for i, width in enumerate(c.widths):
            n_in = c.widths[i + 1] if i + 1 < len(c.widths) else top
            levels.append(UpLevel(n_in, width, i in c.attention_levels, i > 0, c.groups))
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(c.groups, c.widths[0])
        self.conv_out = nn.Conv2d(c.widths[0], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(_swish(self.norm_out(h)))


class VQGANDetokenizer(nn.Module):
    """``(B, h, w)`` tokens -> ``(B, 3, 16 h, 16 w)`` images in [0, 1]."""

    def __init__(self, config: VQGANConfig = VQGANConfig()) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.codebook, config.embed)
        self.post_quant_conv = nn.Conv2d(config.embed, config.embed, 1)
        self.decoder = VQGANDecoder(config)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3:
            raise ValueError(
                f"the detokenizer takes (B, h, w) token grids, got {tuple(tokens.shape)}"
            )
        v = self.config.codebook
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= v):
            raise ValueError(f"VQGAN tokens must be in [0, {v})")
        z = self.embedding(tokens.long()).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(z)).clamp(0, 1)

    def preview(self, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of a partly drawn grid: a position below 0 (not drawn yet) reads
        the mean code embedding, the neutral stand-in."""
        v = self.config.codebook
        if tokens.ndim != 3 or (tokens.numel() and int(tokens.max()) >= v):
            raise ValueError(f"the preview takes (B, h, w) tokens below {v}")
        z = self.embedding(tokens.clamp(min=0).long())
        z = torch.where((tokens >= 0)[..., None], z, self.embedding.weight.mean(0))
        return self.decoder(self.post_quant_conv(z.permute(0, 3, 1, 2))).clamp(0, 1)
