"""The SD KL autoencoder (Rombach et al., CVPR 2022, arXiv 2112.10752, section 3) and
:class:`LdmDecoder`, the decoder component of the latent diffusion family.

Module attribute paths equal the CompVis checkpoint keys under ``first_stage_model.``
(``encoder.down.N.block.M``, ``encoder.mid.attn_1``, ``decoder.up.N...``, ``quant_conv``,
``post_quant_conv``). Leaves first: residual block, attention, resampling, encoder,
decoder, then :class:`AutoencoderKL` and :class:`LdmDecoder`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2i.contracts import Deployment, ExportSpec
from t2i.payloads import Image, Latent
from t2i_ldm.config import VAEConfig
from t2i_ldm.layers import GroupNorm, attention


class VaeResnetBlock(nn.Module):
    """``x + conv2(silu(norm2(conv1(silu(norm1(x))))))``; ``nin_shortcut`` (1x1) when the
    width changes. GroupNorm eps 1e-6."""

    def __init__(self, channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = GroupNorm(groups, channels, eps=1e-6, activation="silu")
        self.conv1 = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.norm2 = GroupNorm(groups, out_channels, eps=1e-6, activation="silu")
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if channels != out_channels:
            self.nin_shortcut = nn.Conv2d(channels, out_channels, 1)
        else:
            self.nin_shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.norm2(self.conv1(self.norm1(x))))
        return self.nin_shortcut(x) + h


class VaeAttnBlock(nn.Module):
    """Single-head self-attention over pixels with 1x1-conv ``q``, ``k``, ``v``, ``proj_out``."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = GroupNorm(groups, channels, eps=1e-6)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)

        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t.flatten(2).transpose(1, 2)[:, None]  # (B, 1, H*W, C)

        out = attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)))  # (B,1,HW,C)
        out = out[:, 0].transpose(1, 2).reshape(b, c, hh, ww)  # (B, C, H, W)
        return x + self.proj_out(out)


class VaeDownsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 convolution without padding (key ``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class VaeUpsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 convolution (key ``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.block_1 = VaeResnetBlock(channels, channels, groups)
        self.attn_1 = VaeAttnBlock(channels, groups)
        self.block_2 = VaeResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: ``block`` (residual blocks) and an optional resampler."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)


class Encoder(nn.Module):
    """Image -> ``2 * z_channels`` moments (mean and log-variance) at 1/factor resolution."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c, g = config, config.norm_groups
        ch = c.base_channels
        self.conv_in = nn.Conv2d(c.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        for i, mult in enumerate(c.channel_mult):
            blocks = []
            for _ in range(c.num_res_blocks):
                blocks.append(VaeResnetBlock(ch, c.base_channels * mult, g))
                ch = c.base_channels * mult
            level = _Level(blocks)
            if i != len(c.channel_mult) - 1:
                level.downsample = VaeDownsample(ch)
            self.down.append(level)
        self.mid = _Mid(ch, g)
        self.norm_out = GroupNorm(g, ch, eps=1e-6, activation="silu")
        self.conv_out = nn.Conv2d(ch, 2 * c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(self.norm_out(self.mid(h)))


class Decoder(nn.Module):
    """``z_channels`` latents -> image in about [-1, 1]. ``up[i]`` is level ``i`` (the
    checkpoint order), run from the deepest level up."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c, g = config, config.norm_groups
        ch = c.base_channels * c.channel_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, ch, 3, padding=1)
        self.mid = _Mid(ch, g)
        levels: list[_Level] = []
        for i in reversed(range(len(c.channel_mult))):
            blocks = []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(VaeResnetBlock(ch, c.base_channels * c.channel_mult[i], g))
                ch = c.base_channels * c.channel_mult[i]
            level = _Level(blocks)
            if i != 0:
                level.upsample = VaeUpsample(ch)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = GroupNorm(g, ch, eps=1e-6, activation="silu")
        self.conv_out = nn.Conv2d(ch, c.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(self.norm_out(h))


class DiagonalGaussian:
    """The encoder's posterior ``N(mean, exp(logvar))``; log-variance clamped to [-30, 20].

    Args:
        moments: ``(B, 2C, h, w)``, mean then log-variance along channels.
    """

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)  # (B, C, h, w) each
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(
            self.mean.shape,
            generator=generator,
            dtype=self.mean.dtype,
            device=generator.device if generator is not None else self.mean.device,
        ).to(self.mean.device)
        return self.mean + self.std * noise


class AutoencoderKL(nn.Module):
    """KL-regularised autoencoder: ``encode(x) -> DiagonalGaussian``, ``decode(z) -> x``.

    Works on *unscaled* latents; :class:`LdmDecoder` applies ``scaling_factor``.
    """

    compile_methods = ("decode", "encode")
    """The calls :class:`LdmDecoder` makes, which ``Engine.build(compile=True)`` compiles
    (``forward`` is only training's; see ``t2i.engine.compile_component``)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """``(B, 3, H, W)`` image in [-1, 1], H and W multiples of the factor -> posterior."""
        f = self.config.factor
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"VAE encode expects (B, {self.config.in_channels}, H, W) with H, W multiples "
                f"of {f}, got {tuple(x.shape)}"
            )
        return DiagonalGaussian(self.quant_conv(self.encoder(x.to(self.dtype))))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, embed_dim, h, w)`` unscaled latents -> ``(B, 3, h*f, w*f)`` image ~[-1, 1]."""
        if z.ndim != 4 or z.shape[1] != self.config.embed_dim:
            raise ValueError(
                f"VAE decode expects (B, {self.config.embed_dim}, h, w), got {tuple(z.shape)}"
            )
        return self.decoder(self.post_quant_conv(z.to(self.dtype)))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Reconstruct ``x`` through a posterior sample (for training); returns
        ``(reconstruction, posterior)``."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior


class LdmDecoder:
    """The decoder component (:class:`t2i.contracts.Decoder`) of the LDM family.

    ``decode`` divides by ``scaling_factor`` (0.18215) before the VAE and maps [-1, 1] to
    [0, 1]; ``encode`` (img2img) does the reverse.

    Args:
        vae: the autoencoder.
        scaling_factor: defaults to ``vae.config.scaling_factor``.
        tile_size: decode in tiles of this many pixels (:mod:`t2i_ldm.vae_tiling`, as
            diffusers' ``enable_tiling``); None: whole.
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        scaling_factor: float | None = None,
        tile_size: int | None = None,
    ) -> None:
        self.vae = vae
        self.scaling_factor = (
            vae.config.scaling_factor if scaling_factor is None else scaling_factor
        )
        self.tile_size = tile_size
        self.factor = vae.config.factor
        self.channels = vae.config.embed_dim

    @property
    def memory_fix(self) -> str | None:
        """What a decode too large for memory should try (the ``Decode`` node's error)."""
        if self.tile_size:
            return None
        return "decode in tiles (--option vae_tiling=true), or lower the size or the batch size"

    def to(self, device=None, dtype=None) -> LdmDecoder:
        """Move the autoencoder; returns ``self``."""
        self.vae.to(device=device, dtype=dtype)
        return self

    def export_spec(self) -> ExportSpec:
        """``vae_decoder`` (:meth:`decode`) and ``vae_encoder`` (:meth:`encode`), each holding
        its half of the VAE (see :mod:`t2i_ldm.export` for where they differ from Optimum's)."""
        from t2i_ldm.export import vae_exports

        deployment = Deployment(
            "t2i_ldm.deployed:decoder", {"factor": self.factor, "channels": self.channels}
        )
        return ExportSpec(vae_exports(self.vae, self.scaling_factor), deployment=deployment)

    def _upcast(self) -> None:
        """SDXL's VAE overflows in fp16 (NaN, black images): with ``force_upcast`` it works in
        float32, as diffusers' ``force_upcast`` (and A1111's 32-bit VAE fallback) do."""
        if self.vae.config.force_upcast and self.vae.dtype == torch.float16:
            self.vae.float()

    @torch.no_grad()
    def decode(self, latent: Latent) -> Image:
        """Scaled latents ``(B, 4, h, w)`` -> :class:`~t2i.payloads.Image` in [0, 1]."""
        self._upcast()
        z = latent.samples / self.scaling_factor
        if self.tile_size:
            from t2i_ldm.vae_tiling import tiled_decode

            x = tiled_decode(self.vae, z, self.tile_size)
        else:
            x = self.vae.decode(z)
        return Image(((x.float() + 1.0) / 2.0).clamp(0.0, 1.0))

    @torch.no_grad()
    def encode(
        self, image: Image, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> Latent:
        """:class:`~t2i.payloads.Image` in [0, 1] -> scaled latents.

        Args:
            image: pixels ``(B, 3, H, W)``, H and W multiples of ``factor``.
            sample: draw from the posterior (A1111 img2img does) instead of its mean.
            generator: randomness for ``sample``.
        """
        self._upcast()
        x = image.pixels * 2.0 - 1.0
        if self.tile_size:
            from t2i_ldm.vae_tiling import tiled_encode

            posterior = tiled_encode(self.vae, x, self.tile_size)
        else:
            posterior = self.vae.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return Latent(z * self.scaling_factor)
