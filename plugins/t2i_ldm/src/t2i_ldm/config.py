"""Configurations of the latent diffusion models: attrs classes and the SD presets.

Numbers follow the original configs: ``CompVis/stable-diffusion:configs/stable-diffusion/
v1-inference.yaml`` (SD 1.x) and ``Stability-AI/stablediffusion:configs/stable-diffusion/
v2-inference(-v).yaml`` (SD 2.x); see ``shared/reference/architectures.md`` section 3.2.
Field names follow the CompVis ``UNetModel`` / ``AutoencoderKL`` arguments, so a reader of
the original YAML finds each number under the same name.
"""

from __future__ import annotations

import math

import attrs
import torch

PREDICTION_TYPES = ("epsilon", "v_prediction")


def _positive(_inst, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _optional_positive(inst, attribute, value):
    if value is not None:
        _positive(inst, attribute, value)


def _positive_items(_inst, attribute, value):
    if any(v < 1 for v in value):
        raise ValueError(f"every {attribute.name} entry must be >= 1, got {value}")


def _int_tuple(value) -> tuple[int, ...]:
    return tuple(int(v) for v in value)


def _sorted_tuple(value) -> tuple[int, ...]:
    return tuple(sorted({int(v) for v in value}))


def _optional_heads(value):
    if value is None or isinstance(value, int):
        return value
    return tuple(int(v) for v in value)


@attrs.frozen
class UNetConfig:
    """The SD denoising UNet (CompVis ``openaimodel.UNetModel`` with ``SpatialTransformer``).

    Attributes:
        in_channels: latent channels in (4; 9 for inpainting models).
        out_channels: channels out (4).
        model_channels: width of the first level (SD: 320).
        channel_mult: width multiplier per level (SD: (1, 2, 4, 4)).
        num_res_blocks: residual blocks per level on the way down (up: one more).
        attention_resolutions: downsampling factors ``ds`` (1, 2, 4, ...) whose levels carry
            a spatial transformer after each residual block; level ``i`` has ``ds = 2**i``.
            The middle block always has one.
        num_heads: heads per attention (SD1: 8), an int for every level or one per level;
            exclusive with ``head_dim``.
        head_dim: channels per head (SD2: 64, giving 5/10/20/20 heads); exclusive with
            ``num_heads``. (diffusers calls the head *count* ``attention_head_dim``.)
        transformer_depth: transformer blocks per spatial transformer, one int for every
            level or one per level (SDXL: (1, 2, 10) with no attention at level 0); the
            middle block takes the last level's.
        context_dim: width of the cross-attention context (SD1: 768, SD2: 1024).
        use_linear_projection: ``proj_in``/``proj_out`` are Linear (SD2) instead of 1x1 conv.
        upcast_attention: compute attention in float32 whatever the model dtype (SD2.1 needs
            it in fp16; the LDM code does it by default with ``ATTN_PRECISION=fp32``).
        norm_groups: GroupNorm groups (32).
        dropout: dropout in residual blocks (0 for inference).
        adm_in_channels: width of the vector the ``label_emb`` MLP adds to the timestep
            embedding (CompVis ``adm_in_channels``; diffusers
            ``projection_class_embeddings_input_dim``): SDXL's pooled text plus the Fourier
            features of its micro-conditioning (base 2816 = 1280 + 6 * 256, refiner 2560 =
            1280 + 5 * 256); 0 (SD 1.x/2.x) for none.
        micro_embed_dim: Fourier width per micro-conditioning number (diffusers
            ``addition_time_embed_dim``, SDXL: 256).
        context_pooling_heads: heads of an attention pooling of the context whose result is
            added to the timestep embedding, as Imagen (and GLIDE, with the last token) do, so
            every residual block sees the whole prompt; 0 (SD) for none.
    """

    in_channels: int = attrs.field(default=4, validator=_positive)
    out_channels: int = attrs.field(default=4, validator=_positive)
    model_channels: int = attrs.field(default=320, validator=_positive)
    channel_mult: tuple[int, ...] = attrs.field(
        default=(1, 2, 4, 4), converter=_int_tuple, validator=_positive_items
    )
    num_res_blocks: int = attrs.field(default=2, validator=_positive)
    attention_resolutions: tuple[int, ...] = attrs.field(default=(1, 2, 4), converter=_sorted_tuple)
    num_heads: int | tuple[int, ...] | None = attrs.field(default=8, converter=_optional_heads)
    head_dim: int | None = attrs.field(default=None, validator=_optional_positive)
    transformer_depth: int | tuple[int, ...] = attrs.field(default=1, converter=_optional_heads)
    context_dim: int = attrs.field(default=768, validator=_positive)
    use_linear_projection: bool = False
    upcast_attention: bool = False
    norm_groups: int = attrs.field(default=32, validator=_positive)
    dropout: float = 0.0
    context_pooling_heads: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    adm_in_channels: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    micro_embed_dim: int = attrs.field(default=256, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if not self.channel_mult:
            raise ValueError("channel_mult must name at least one level, e.g. (1, 2, 4, 4)")
        if (self.num_heads is None) == (self.head_dim is None):
            raise ValueError(
                "set exactly one of num_heads (SD1: 8) and head_dim (SD2: 64); "
                f"got num_heads={self.num_heads}, head_dim={self.head_dim}"
            )
        if self.context_pooling_heads and self.context_dim % self.context_pooling_heads:
            raise ValueError(
                f"context_pooling_heads={self.context_pooling_heads} does not divide "
                f"context_dim={self.context_dim}"
            )
        for name in ("num_heads", "transformer_depth"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) != len(self.channel_mult):
                raise ValueError(
                    f"{name} has {len(value)} entries but there are "
                    f"{len(self.channel_mult)} levels; give one per level or a single int"
                )
        depths = self.transformer_depth
        if any(d < 1 for d in (depths if isinstance(depths, tuple) else (depths,))):
            raise ValueError(f"every transformer_depth entry must be >= 1, got {depths}")
        if self.model_channels % self.norm_groups:  # the stem and the output norm
            raise ValueError(
                f"model_channels={self.model_channels} is not divisible by norm_groups="
                f"{self.norm_groups}; change model_channels or norm_groups"
            )
        for level in range(len(self.channel_mult)):
            ch = self.level_channels(level)
            if ch % self.norm_groups:
                raise ValueError(
                    f"level {level} has {ch} channels, not divisible by norm_groups="
                    f"{self.norm_groups}; change model_channels/channel_mult or norm_groups"
                )
            heads = self.heads_at(level)
            if heads < 1 or ch % heads:
                raise ValueError(
                    f"level {level}: {ch} channels cannot split into {heads} attention heads; "
                    "fix num_heads/head_dim"
                )

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding MLP (4x ``model_channels``, as in SD)."""
        return 4 * self.model_channels

    @property
    def downsample_factor(self) -> int:
        """Latent height/width must be a multiple of this."""
        return 2 ** (self.num_levels - 1)

    def level_channels(self, level: int) -> int:
        return self.model_channels * self.channel_mult[level]

    def has_attention(self, level: int) -> bool:
        return 2**level in self.attention_resolutions

    def depth_at(self, level: int) -> int:
        """Transformer blocks per spatial transformer of ``level``."""
        d = self.transformer_depth
        return d[level] if isinstance(d, tuple) else int(d)

    @property
    def middle_depth(self) -> int:
        """Transformer blocks of the middle block (the last level's, as SDXL and diffusers)."""
        return self.depth_at(self.num_levels - 1)

    def heads_at(self, level: int) -> int:
        """Number of attention heads of ``level`` (the middle block uses the last level's)."""
        if self.head_dim is not None:
            return self.level_channels(level) // self.head_dim
        if isinstance(self.num_heads, tuple):
            return self.num_heads[level]
        return int(self.num_heads)


@attrs.frozen
class VAEConfig:
    """The KL autoencoder (CompVis ``AutoencoderKL`` with ``Encoder``/``Decoder``).

    Attributes:
        in_channels: image channels (3).
        out_channels: image channels out (3).
        base_channels: width of the first level (``ch``, SD: 128).
        channel_mult: width multiplier per level (``ch_mult``, SD: (1, 2, 4, 4)); the spatial
            factor is ``2 ** (len(channel_mult) - 1)`` (SD: 8).
        num_res_blocks: residual blocks per encoder level (decoder: one more).
        z_channels: latent channels (4); the encoder emits mean and log-variance (``double_z``).
        embed_dim: channels after ``quant_conv`` (4; equal to ``z_channels`` in SD).
        norm_groups: GroupNorm groups (32), eps 1e-6.
        scaling_factor: latents are multiplied by this after encoding (0.18215 for SD,
            0.13025 for SDXL).
        force_upcast: decode (and encode) in float32 even when the model is half precision,
            as diffusers' ``force_upcast`` does for SDXL's VAE, whose fp16 activations
            overflow into NaN (black images).
    """

    in_channels: int = attrs.field(default=3, validator=_positive)
    out_channels: int = attrs.field(default=3, validator=_positive)
    base_channels: int = attrs.field(default=128, validator=_positive)
    channel_mult: tuple[int, ...] = attrs.field(
        default=(1, 2, 4, 4), converter=_int_tuple, validator=_positive_items
    )
    num_res_blocks: int = attrs.field(default=2, validator=_positive)
    z_channels: int = attrs.field(default=4, validator=_positive)
    embed_dim: int = attrs.field(default=4, validator=_positive)
    norm_groups: int = attrs.field(default=32, validator=_positive)
    scaling_factor: float = 0.18215
    force_upcast: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.channel_mult:
            raise ValueError("channel_mult must name at least one level, e.g. (1, 2, 4, 4)")
        for m in (1, *self.channel_mult):  # 1: the stem's width, base_channels
            if (self.base_channels * m) % self.norm_groups:
                raise ValueError(
                    f"VAE width {self.base_channels * m} is not divisible by norm_groups="
                    f"{self.norm_groups}; change base_channels/channel_mult or norm_groups"
                )

    @property
    def factor(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.channel_mult) - 1)


@attrs.frozen
class NoiseScheduleConfig:
    """The discrete DDPM training schedule of SD: ``scaled_linear`` betas.

    ``beta_t = (linspace(sqrt(beta_start), sqrt(beta_end), T)) ** 2`` (the LDM
    ``make_beta_schedule("linear")``, which diffusers calls ``scaled_linear``).
    """

    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_timesteps: int = attrs.field(default=1000, validator=_positive)

    def betas(self) -> torch.Tensor:
        """``(T,)`` float64 betas."""
        root = torch.linspace(
            math.sqrt(self.beta_start),
            math.sqrt(self.beta_end),
            self.num_timesteps,
            dtype=torch.float64,
        )
        return root**2

    def alphas_cumprod(self) -> torch.Tensor:
        """``(T,)`` float64 cumulative product of ``1 - beta``."""
        return torch.cumprod(1.0 - self.betas(), dim=0)


@attrs.frozen
class LdmConfig:
    """A whole latent diffusion model variant.

    Attributes:
        name: variant name ("sd1", "sd2-512-eps", "sd2-768-v", or "tiny-*").
        unet: the UNet configuration.
        vae: the VAE configuration.
        prediction_type: "epsilon" or "v_prediction" (SD2 768-v).
        text_encoder: which text encoder the variant expects ("clip_l" for SD1,
            "openclip_h" for SD2, "clip_l+openclip_g" for SDXL base, "openclip_g" for the
            SDXL refiner); the text encoder helper owns the model itself.
        resolution: native image size in pixels (512, 768; SDXL 1024).
        schedule: the discrete noise schedule.
    """

    name: str
    unet: UNetConfig
    vae: VAEConfig
    prediction_type: str = attrs.field(
        default="epsilon", validator=attrs.validators.in_(PREDICTION_TYPES)
    )
    text_encoder: str = "clip_l"
    resolution: int = 512
    schedule: NoiseScheduleConfig = attrs.field(factory=NoiseScheduleConfig)


SD1_UNET = UNetConfig()
"""SD 1.x UNet: 320 channels, mult (1, 2, 4, 4), 8 heads, conv projections, context 768."""

SD2_UNET = UNetConfig(
    num_heads=None,
    head_dim=64,
    context_dim=1024,
    use_linear_projection=True,
    upcast_attention=True,
)
"""SD 2.x UNet: head dim 64 (5/10/20/20 heads), linear projections, context 1024."""

SD_VAE = VAEConfig()
"""The SD 1.x/2.x KL-f8 autoencoder: ch 128, mult (1, 2, 4, 4), 4 latent channels."""

SD1 = LdmConfig("sd1", SD1_UNET, SD_VAE, "epsilon", "clip_l", 512)
SD2_512_EPS = LdmConfig("sd2-512-eps", SD2_UNET, SD_VAE, "epsilon", "openclip_h", 512)
SD2_768_V = LdmConfig("sd2-768-v", SD2_UNET, SD_VAE, "v_prediction", "openclip_h", 768)

SDXL_UNET = UNetConfig(
    channel_mult=(1, 2, 4),
    attention_resolutions=(2, 4),
    num_heads=None,
    head_dim=64,
    transformer_depth=(1, 2, 10),
    context_dim=2048,
    use_linear_projection=True,
    adm_in_channels=2816,
)
"""SDXL base UNet (``sd_xl_base.yaml``): 3 levels, no attention at the first, depth 2 / 10,
head dim 64, context 2048 (CLIP-L 768 + OpenCLIP bigG 1280), label_emb on 2816."""

SDXL_REFINER_UNET = UNetConfig(
    model_channels=384,
    channel_mult=(1, 2, 4, 4),
    attention_resolutions=(2, 4),
    num_heads=None,
    head_dim=64,
    transformer_depth=4,
    context_dim=1280,
    use_linear_projection=True,
    adm_in_channels=2560,
)
"""SDXL refiner UNet (``sd_xl_refiner.yaml``): 384 channels, attention at levels 1 and 2
(depth 4, also the middle block), context 1280 (bigG only), label_emb on 2560."""

SDXL_VAE = VAEConfig(scaling_factor=0.13025, force_upcast=True)
"""SDXL's KL-f8 autoencoder: SD's shapes, scaling 0.13025, decoded in float32."""

TINY_UNET = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(1,),
    num_heads=2,
    context_dim=32,
    norm_groups=8,
)
"""A tiny SD1-style UNet for tests and the shapes benchmark (32/64 channels, 2 heads)."""

TINY_UNET_SD2 = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(1,),
    num_heads=None,
    head_dim=16,
    context_dim=32,
    norm_groups=8,
    use_linear_projection=True,
    upcast_attention=True,
)
"""A tiny SD2-style UNet: head dim 16, linear projections, upcast attention."""

TINY_VAE = VAEConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, norm_groups=8)
"""A tiny KL autoencoder (factor 2) for tests."""

PRESETS: dict[str, LdmConfig] = {
    c.name: c
    for c in (
        SD1,
        SD2_512_EPS,
        SD2_768_V,
        LdmConfig("sdxl", SDXL_UNET, SDXL_VAE, "epsilon", "clip_l+openclip_g", 1024),
        LdmConfig("sdxl-refiner", SDXL_REFINER_UNET, SDXL_VAE, "epsilon", "openclip_g", 1024),
        LdmConfig("tiny-sd1", TINY_UNET, TINY_VAE, "epsilon", "clip_l", 64),
        LdmConfig("tiny-sd2-v", TINY_UNET_SD2, TINY_VAE, "v_prediction", "openclip_h", 64),
    )
}
"""Every named variant; :func:`get_preset` looks names up."""


def get_preset(name: str) -> LdmConfig:
    """The variant called ``name`` (case-insensitive; '-', '_' and ' ' alike)."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    if key not in PRESETS:
        raise KeyError(f"unknown LDM variant {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[key]
