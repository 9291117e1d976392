"""DALL-E's discrete VAE in OpenAI's architecture and parameter layout (Ramesh et al. 2021).

The module tree and parameter names are those of OpenAI's ``dall_e`` package
(``blocks.input.w``, ``blocks.group_1.block_1.res_path.conv_1.w`` ... ``blocks.output.conv.b``),
so a converted ``encoder.pkl`` / ``decoder.pkl`` (:mod:`t2i_dalle.convert`) loads with
``load_state_dict``. The code is ours.

- Encoder: 7x7 input conv, ``group_count`` groups of ``n_blk_per_group`` residual blocks
  (widths ``n_hid x 1, 2, 4, 8``), a 2x max-pool after every group but the last, then ReLU and a
  1x1 conv to ``vocab_size`` logits; tokens are the argmax over channels.
- Decoder: a 1x1 conv from a one-hot ``vocab_size`` map to ``n_init`` channels, groups of widths
  ``n_hid x 8, 4, 2, 1`` (the last ``group_count``), nearest 2x upsampling after every group but
  the last, then ReLU and a 1x1 conv to ``2 x 3`` channels: the logit-Laplace location (0-2) and
  log-scale (3-5). The image is ``unmap_pixels(sigmoid(x[:, :3]))``.
- Residual blocks: ``id_path(x) + res_path(x) / n_layers**2`` with ``n_layers = group_count x
  n_blk_per_group``; ``res_path`` is four ReLU-conv pairs with kernels 3,3,3,1 (encoder) or
  1,3,3,3 (decoder), hidden width ``n_out / 4``.

OpenAI's release has ``group_count=4`` (256 px -> 32 x 32 tokens); ``dalle-shapes`` uses 3
(64 px -> 16 x 16). Everything runs in the parameters' dtype (OpenAI's CUDA fp16 casts are a
device policy, not part of the function).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import attrs
import torch
import torch.nn.functional as F
from torch import nn

LOGIT_LAPLACE_EPS = 0.1
"""``map_pixels`` squeezes [0, 1] into [eps, 1 - eps] (the logit-Laplace support)."""


def map_pixels(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> [eps, 1 - eps] (the dVAE's input range)."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * x + LOGIT_LAPLACE_EPS


def unmap_pixels(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`map_pixels`, clamped to [0, 1]."""
    return ((x - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS)).clamp(0, 1)


@attrs.frozen
class DVAEConfig:
    """Shape of a dVAE; OpenAI's release is the default."""

    group_count: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    n_hid: int = attrs.field(default=256, validator=attrs.validators.ge(4))
    n_blk_per_group: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    n_init: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    vocab_size: int = attrs.field(default=8192, validator=attrs.validators.ge(2))
    channels: int = 3

    @property
    def factor(self) -> int:
        """Pixels per token side: ``2 ** (group_count - 1)``."""
        return 2 ** (self.group_count - 1)

    @property
    def n_layers(self) -> int:
        return self.group_count * self.n_blk_per_group


class Conv2d(nn.Module):
    """A same-padded conv whose parameters are ``w`` and ``b`` (OpenAI's naming), initialised
    ``w ~ N(0, 1 / (n_in k^2))``, ``b = 0``."""

    def __init__(self, n_in: int, n_out: int, kernel: int) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"kernel size must be odd, got {kernel}")
        self.kernel = kernel
        self.w = nn.Parameter(
            torch.randn(n_out, n_in, kernel, kernel) / math.sqrt(n_in * kernel**2)
        )
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.to(self.w.dtype), self.w, self.b, padding=(self.kernel - 1) // 2)


class ResidualBlock(nn.Module):
    """``id_path(x) + post_gain * res_path(x)``; ``kernels`` are the res-path convs' sizes."""

    def __init__(self, n_in: int, n_out: int, n_layers: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        if n_out % 4:
            raise ValueError(f"block width must be a multiple of 4, got {n_out}")
        hid = n_out // 4
        self.post_gain = 1.0 / n_layers**2
        self.id_path = Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        widths = (n_in, hid, hid, hid, n_out)
        layers: list[tuple[str, nn.Module]] = []
        for i, k in enumerate(kernels):
            layers += [
                (f"relu_{i + 1}", nn.ReLU()),
                (f"conv_{i + 1}", Conv2d(*widths[i : i + 2], k)),
            ]
        self.res_path = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.id_path(x) + self.post_gain * self.res_path(x)


def _group(blocks: list[ResidualBlock], resample: tuple[str, nn.Module] | None) -> nn.Sequential:
    items: list[tuple[str, nn.Module]] = [(f"block_{i + 1}", b) for i, b in enumerate(blocks)]
    return nn.Sequential(OrderedDict(items + ([resample] if resample else [])))


class Encoder(nn.Module):
    """Image in ``map_pixels`` range ``(B, 3, H, W)`` -> logits ``(B, vocab, H/f, W/f)``."""

    def __init__(self, config: DVAEConfig = DVAEConfig()) -> None:
        super().__init__()
        self.config = c = config
        layers: list[tuple[str, nn.Module]] = [("input", Conv2d(c.channels, c.n_hid, 7))]
        width = c.n_hid
        for g in range(c.group_count):
            out = c.n_hid * 2**g
            blocks = [
                ResidualBlock(width if i == 0 else out, out, c.n_layers, (3, 3, 3, 1))
                for i in range(c.n_blk_per_group)
            ]
            pool = ("pool", nn.MaxPool2d(2)) if g < c.group_count - 1 else None
            layers.append((f"group_{g + 1}", _group(blocks, pool)))
            width = out
        head = OrderedDict([("relu", nn.ReLU()), ("conv", Conv2d(width, c.vocab_size, 1))])
        layers.append(("output", nn.Sequential(head)))
        self.blocks = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.channels:
            raise ValueError(
                f"the dVAE encoder takes (B, {self.config.channels}, H, W) images, got "
                f"{tuple(x.shape)}"
            )
        f = self.config.factor
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"image sides must be multiples of {f}, got {tuple(x.shape[2:])}")
        return self.blocks(x)

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> ``(B, H/f, W/f)`` int64 tokens (argmax of the logits)."""
        return self(map_pixels(pixels)).argmax(1)


class Decoder(nn.Module):
    """A (soft) one-hot map ``(B, vocab, h, w)`` -> ``(B, 6, h f, w f)`` logit-Laplace stats."""

    def __init__(self, config: DVAEConfig = DVAEConfig()) -> None:
        super().__init__()
        self.config = c = config
        layers: list[tuple[str, nn.Module]] = [("input", Conv2d(c.vocab_size, c.n_init, 1))]
        width = c.n_init
        for g in range(c.group_count):
            out = c.n_hid * 2 ** (c.group_count - 1 - g)
            blocks = [
                ResidualBlock(width if i == 0 else out, out, c.n_layers, (1, 3, 3, 3))
                for i in range(c.n_blk_per_group)
            ]
            up = ("upsample", nn.Upsample(scale_factor=2, mode="nearest"))
            layers.append((f"group_{g + 1}", _group(blocks, up if g < c.group_count - 1 else None)))
            width = out
        head = OrderedDict([("relu", nn.ReLU()), ("conv", Conv2d(width, 2 * c.channels, 1))])
        layers.append(("output", nn.Sequential(head)))
        self.blocks = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.vocab_size:
            raise ValueError(
                f"the dVAE decoder takes (B, {self.config.vocab_size}, h, w) one-hot maps, got "
                f"{tuple(x.shape)}"
            )
        return self.blocks(x)

    def images(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` tokens -> [0, 1] images ``(B, 3, h f, w f)``."""
        v = self.config.vocab_size
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= v):
            raise ValueError(
                f"tokens must be in [0, {v}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        one_hot = F.one_hot(tokens.long(), v).permute(0, 3, 1, 2).to(self.blocks.input.w.dtype)
        return self.pixels(one_hot)

    def preview_images(self, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`images` of a partly drawn grid: a position below 0 (not drawn yet) reads
        the uniform mix of every codebook entry, the neutral stand-in (the first conv is
        1x1, so this is the mean of the code embeddings)."""
        v = self.config.vocab_size
        if tokens.numel() and int(tokens.max()) >= v:
            raise ValueError(f"tokens must be below {v}, got {int(tokens.max())}")
        drawn = (tokens >= 0)[:, None]
        one_hot = F.one_hot(tokens.clamp(min=0).long(), v).permute(0, 3, 1, 2)
        one_hot = one_hot.to(self.blocks.input.w.dtype)
        return self.pixels(torch.where(drawn, one_hot, torch.full_like(one_hot, 1.0 / v)))

    def pixels(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B, vocab, h, w)`` code maps (one-hot or mixed) -> [0, 1] images."""
        stats = self(maps)
        return unmap_pixels(torch.sigmoid(stats[:, : self.config.channels].float()))


def config_from_state(state: dict[str, torch.Tensor], which: str) -> DVAEConfig:
    """Read a :class:`DVAEConfig` off an encoder's or decoder's state dict (its shapes)."""
    groups = sorted({int(k.split(".")[1].split("_")[1]) for k in state if ".group_" in f".{k}"})
    if not groups or "blocks.input.w" not in state or "blocks.output.conv.w" not in state:
        raise ValueError(
            f"not a DALL-E dVAE {which}: expected OpenAI's keys blocks.input.w, "
            "blocks.group_N.block_M.*, blocks.output.conv.w"
        )
    blocks = {k.split(".")[2] for k in state if k.startswith("blocks.group_1.")}
    n_blk = len([b for b in blocks if b.startswith("block_")])
    inp, out = state["blocks.input.w"], state["blocks.output.conv.w"]
    count = len(groups)
    if which == "encoder":
        return DVAEConfig(
            count, int(inp.shape[0]), n_blk, 128, int(out.shape[0]), int(inp.shape[1])
        )
    last = state[f"blocks.group_{count}.block_1.res_path.conv_4.w"]
    return DVAEConfig(
        count, int(last.shape[0]), n_blk, int(inp.shape[0]), int(inp.shape[1]), out.shape[0] // 2
    )
