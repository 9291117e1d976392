"""DF-GAN's generator and one-way discriminator (Tao et al., CVPR 2022, ``tobran/DF-GAN``).

Module and parameter names follow DF-GAN's ``models/GAN.py`` (``fc``, ``GBlocks.N.fuse1
.affine0.fc_gamma.linear1``, ``to_rgb.1``, ``conv_img``, ``DBlocks.N.conv_r.0``,
``joint_conv.0`` ...), so a released ``{'model': {'netG', 'netD', 'netC'}}`` file at matching
sizes loads into them key for key (:mod:`t2i_gan.checkpoint`).

- :class:`NetG`: ``z -> fc -> (8 nf, 4, 4)``, then ``G_Block`` s that each upsample x2 and
  fuse the text deeply (:class:`DFBLK`: two :class:`Affine` layers predicting per-channel
  scale and shift from ``cat(z, sentence)``), then LeakyReLU, a 3x3 conv and tanh.
- :class:`NetD`: ``conv_img`` then ``D_Block`` s down to ``(8 nf, 4, 4)`` image features;
  :class:`NetC` joins them with the sentence embedding into one score (the one-way
  discriminator).
- :class:`WordPooling` (ours, ``GanConfig.word_queries`` > 0): G and C read a learned
  attention pooling of MiniLM's per-token states instead of the mean-pooled sentence alone.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict

import attrs
import torch
import torch.nn.functional as F
from torch import nn


@attrs.frozen
class GanConfig:
    """Sizes of a DF-GAN: ``nf`` (DF-GAN's ngf = ndf), ``z_dim``, ``cond_dim`` (sentence
    embedding width), ``image_size`` (a power of two >= 32), ``cond_scale``: the sentence
    vector is multiplied by it before G and C see it (1 for DF-GAN's DAMSM vectors;
    ``sqrt(384)`` for MiniLM's unit vectors, so that their coordinates are about as large as
    ``z``'s; without it G and D ignored the text). Two additions of ours, off for DF-GAN's
    files (whose keys they would not match): ``cond_norm`` standardises the sentence vector
    per coordinate with statistics of the training captions (:class:`SentenceNorm`, buffers
    ``cond_norm.*`` in ``netG`` and ``netC``), and ``projection`` adds the projection
    discriminator's term ``<pool(features), W s>`` to ``netC``'s score (Miyato & Koyama,
    ICLR 2018), a direct text-image match D learns early. ``word_queries`` > 0 (ours too):
    G and C each pool the text encoder's per-token states (width ``cond_dim``) with that many
    learned queries of ``word_heads`` heads (:class:`WordPooling`, keys ``word_pool.*``); 0
    is the sentence vector alone, as in DF-GAN."""

    nf: int = 32
    z_dim: int = 100
    cond_dim: int = 256
    image_size: int = 64
    cond_scale: float = 1.0
    cond_norm: bool = False
    projection: bool = False
    word_queries: int = 0
    word_heads: int = 6

    def __attrs_post_init__(self) -> None:
        size = self.image_size
        if size < 32 or size & (size - 1):  # below 32 DF-GAN's channel list never reaches 8 nf
            raise ValueError(f"image_size must be a power of two >= 32, got {size}")
        for name in ("nf", "z_dim", "cond_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.word_queries < 0:
            raise ValueError(
                f"word_queries must be >= 0 (0: no word pooling), got {self.word_queries}"
            )
        if self.word_queries and (self.word_heads < 1 or self.cond_dim % self.word_heads):
            raise ValueError(
                f"word_heads must be >= 1 and divide cond_dim {self.cond_dim}, "
                f"got {self.word_heads}"
            )


def channel_pairs(nf: int, image_size: int, *, generator: bool) -> list[tuple[int, int]]:
    """DF-GAN's ``get_G_in_out_chs`` / ``get_D_in_out_chs``: (in, out) channels per block."""
    layers = int(math.log2(image_size)) - 1
    channels = [nf * min(2**i, 8) for i in range(layers)]
    if generator:
        channels = channels[::-1]
    return list(itertools.pairwise(channels))


class SentenceNorm(nn.Module):
    """``(s - mean) * inv_std`` per coordinate; identity until :meth:`fit`.

    A frozen encoder's sentence vectors share a large common part (MiniLM's shapes captions:
    44 % of the squared norm) and some coordinates barely move; standardising makes the
    caption-to-caption differences, which carry the attributes, the O(1) signal."""

    STD_FLOOR = 0.1
    """Coordinates whose spread is under this share of the median spread are not amplified."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, vectors: torch.Tensor) -> SentenceNorm:
        """Set the statistics from ``vectors`` ``(N, dim)``, N >= 2."""
        vectors = vectors.to(self.mean)
        std = vectors.std(dim=0)
        std = std.clamp_min(float(std.median()) * self.STD_FLOOR + 1e-12)
        self.mean.copy_(vectors.mean(dim=0))
        self.inv_std.copy_(1.0 / std)
        return self

    def forward(self, sentence: torch.Tensor) -> torch.Tensor:
        return (sentence - self.mean.to(sentence)) * self.inv_std.to(sentence)


def condition(config: GanConfig, norm: SentenceNorm | None, sentence: torch.Tensor):
    """The sentence vector as G's fusion and C see it: standardised, then ``cond_scale`` x."""
    if norm is not None:
        sentence = norm(sentence)
    return sentence * config.cond_scale


class WordPooling(nn.Module):
    """``(states (B, T, D), mask (B, T), sentence (B, D)) -> (B, D)``: k learned queries attend
    over the non-padded tokens (multi-head, softmax masked to ``mask``'s True positions), and
    ``out`` maps ``cat(sentence, the k pooled words)`` to the conditioning vector.

    AttnGAN's word features (Xu et al., CVPR 2018: attention over per-word states, not one
    sentence vector) pooled as in the Set Transformer's PMA (Lee et al., ICML 2019: learned
    seed queries, multi-head). A mean-pooled MiniLM vector is nearly a bag of words (``a red
    circle left of a blue square`` ~ its colour swap); a query can pick one object's words.
    ``out`` starts as the identity on the sentence block and 0 on the words' (as the ldm
    family's ``ContextPooling`` starts at 0): a new pooling leaves G and C as they were (and
    ``--init`` can add it to a trained sentence-vector GAN) until training moves it.
    """

    def __init__(self, dim: int, queries: int, heads: int) -> None:
        super().__init__()
        self.queries_n, self.heads = queries, heads
        self.norm = nn.LayerNorm(dim)
        self.queries = nn.Parameter(torch.randn(queries, dim))
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.out = nn.Linear((queries + 1) * dim, dim)
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.weight[:, :dim].copy_(torch.eye(dim))
            self.out.bias.zero_()

    def attend(self, states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The k pooled words ``(B, k, D)``; ``mask`` True = a real token (None: all)."""
        b, t, c = states.shape
        h, d = self.heads, c // self.heads
        x = self.norm(states)
        q = self.queries.to(x).view(self.queries_n, h, d).transpose(0, 1)  # (h, k, d)
        k = self.to_k(x).view(b, t, h, d).transpose(1, 2)  # (B, h, T, d)
        v = self.to_v(x).view(b, t, h, d).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) * d**-0.5  # (B, h, k, T)
        if mask is not None:
            keep = mask.to(torch.bool)[:, None, None, :]
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        return (weights @ v).transpose(1, 2).reshape(b, self.queries_n, c)

    def forward(
        self, states: torch.Tensor, mask: torch.Tensor | None, sentence: torch.Tensor
    ) -> torch.Tensor:
        words = self.attend(states, mask).flatten(1)
        return self.out(torch.cat((sentence, words.to(sentence)), dim=1))


def word_pooling(config: GanConfig) -> WordPooling | None:
    """The config's :class:`WordPooling`, or None when ``word_queries`` is 0."""
    if not config.word_queries:
        return None
    return WordPooling(config.cond_dim, config.word_queries, config.word_heads)


def text_condition(
    config: GanConfig,
    norm: SentenceNorm | None,
    pool: WordPooling | None,
    sentence: torch.Tensor,
    words: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """The conditioning vector ``(B, cond_dim)``: :func:`condition` of the sentence, then
    (word pooling models) :class:`WordPooling` of the token states with it."""
    y = condition(config, norm, sentence)
    if pool is None:
        return y
    if words is None:
        raise ValueError(
            f"this GAN pools words (word_queries={config.word_queries}): it needs the text "
            "encoder's per-token states (B, T, cond_dim) and their mask beside the sentence"
        )
    return pool(words, mask, y)


class Affine(nn.Module):
    """``gamma(y) * x + beta(y)`` per channel; two-layer MLPs, gamma starts at 1, beta at 0."""

    def __init__(self, cond_dim: int, num_features: int) -> None:
        super().__init__()

        def mlp() -> nn.Sequential:
            return nn.Sequential(
                OrderedDict(
                    [
                        ("linear1", nn.Linear(cond_dim, num_features)),
                        ("relu1", nn.ReLU(inplace=True)),
                        ("linear2", nn.Linear(num_features, num_features)),
                    ]
                )
            )

        self.fc_gamma, self.fc_beta = mlp(), mlp()
        self.reset_fusion()

    def reset_fusion(self) -> None:
        """DF-GAN's ``_initialize``: the fusion starts as the identity (scale 1, shift 0)."""
        nn.init.zeros_(self.fc_gamma.linear2.weight)
        nn.init.ones_(self.fc_gamma.linear2.bias)
        nn.init.zeros_(self.fc_beta.linear2.weight)
        nn.init.zeros_(self.fc_beta.linear2.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight = self.fc_gamma(y)[:, :, None, None]
        bias = self.fc_beta(y)[:, :, None, None]
        return weight * x + bias


class DFBLK(nn.Module):
    """Deep fusion block: Affine, LeakyReLU 0.2, Affine, LeakyReLU 0.2."""

    def __init__(self, cond_dim: int, in_ch: int) -> None:
        super().__init__()
        self.affine0 = Affine(cond_dim, in_ch)
        self.affine1 = Affine(cond_dim, in_ch)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.affine0(x, y), 0.2)
        return F.leaky_relu(self.affine1(h, y), 0.2)


class G_Block(nn.Module):
    """x2 nearest upsampling, then ``shortcut(x) + c2(fuse2(c1(fuse1(x))))``."""

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.fuse1 = DFBLK(cond_dim, in_ch)
        self.fuse2 = DFBLK(cond_dim, out_ch)
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, stride=1, padding=0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2)
        shortcut = self.c_sc(x) if self.learnable_sc else x
        h = self.c2(self.fuse2(self.c1(self.fuse1(x, y)), y))
        return shortcut + h


class NetG(nn.Module):
    """DF-GAN generator ``(z (B, z_dim), sentence (B, cond_dim)) -> image (B, 3, S, S)`` in
    [-1, 1]; the fusion layers see ``cat(z, sentence)``. A word pooling model also takes the
    token states ``words (B, T, cond_dim)`` and ``mask (B, T)``; its fusion sees
    ``cat(z, word_pool(words, mask, sentence))``."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config, nf = config, config.nf
        self.fc = nn.Linear(config.z_dim, nf * 8 * 4 * 4)
        pairs = channel_pairs(nf, config.image_size, generator=True)
        cond = config.cond_dim + config.z_dim
        self.GBlocks = nn.ModuleList(G_Block(cond, i, o) for i, o in pairs)
        self.to_rgb = nn.Sequential(
            nn.LeakyReLU(0.2), nn.Conv2d(pairs[-1][1], 3, 3, 1, 1), nn.Tanh()
        )
        self.cond_norm = SentenceNorm(config.cond_dim) if config.cond_norm else None
        self.word_pool = word_pooling(config)

    def forward(
        self,
        noise: torch.Tensor,
        sentence: torch.Tensor,
        words: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out = self.fc(noise).view(noise.shape[0], 8 * self.config.nf, 4, 4)
        y = text_condition(self.config, self.cond_norm, self.word_pool, sentence, words, mask)
        cond = torch.cat((noise, y), dim=1)
        for block in self.GBlocks:
            out = block(out, cond)
        return self.to_rgb(out)


class D_Block(nn.Module):
    """``avg_pool(shortcut(x)) + gamma * conv_r(x)``, gamma a learned scalar starting at 0."""

    def __init__(self, fin: int, fout: int, downsample: bool = True) -> None:
        super().__init__()
        self.downsample = downsample
        self.learned_shortcut = fin != fout
        self.conv_r = nn.Sequential(
            nn.Conv2d(fin, fout, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(fout, fout, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
        )
        self.conv_s = nn.Conv2d(fin, fout, 1, stride=1, padding=0)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv_r(x)
        if self.learned_shortcut:
            x = self.conv_s(x)
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return x + self.gamma * res


class NetD(nn.Module):
    """DF-GAN discriminator body: image ``(B, 3, S, S)`` -> features ``(B, 8 nf, 4, 4)``."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        nf = config.nf
        self.conv_img = nn.Conv2d(3, nf, 3, 1, 1)
        pairs = channel_pairs(nf, config.image_size, generator=False)
        self.DBlocks = nn.ModuleList(D_Block(i, o) for i, o in pairs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_img(x)
        for block in self.DBlocks:
            out = block(out)
        return out


class NetC(nn.Module):
    """The one-way head: ``(features (B, 8 nf, 4, 4), sentence (B, cond_dim)) -> (B,)``;
    with ``config.projection`` plus ``<mean-pooled features, proj(sentence)>``. A word pooling
    model takes ``words`` / ``mask`` as :class:`NetG` does; its own pooling's vector replaces
    the sentence in the join and the projection."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config, nf, self.cond_dim = config, config.nf, config.cond_dim
        self.joint_conv = nn.Sequential(
            nn.Conv2d(nf * 8 + config.cond_dim, nf * 2, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(nf * 2, 1, 4, 1, 0, bias=False),
        )
        self.cond_norm = SentenceNorm(config.cond_dim) if config.cond_norm else None
        self.proj = nn.Linear(config.cond_dim, nf * 8, bias=False) if config.projection else None
        self.word_pool = word_pooling(config)

    def forward(
        self,
        features: torch.Tensor,
        sentence: torch.Tensor,
        words: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        y = text_condition(self.config, self.cond_norm, self.word_pool, sentence, words, mask)
        tiled = y.view(-1, self.cond_dim, 1, 1).expand(-1, -1, *features.shape[2:])
        score = self.joint_conv(torch.cat((features, tiled), 1)).view(-1)
        if self.proj is not None:
            pooled = features.mean(dim=(2, 3))
            score = score + (pooled * self.proj(y)).sum(dim=1) / pooled.shape[1] ** 0.5
        return score
