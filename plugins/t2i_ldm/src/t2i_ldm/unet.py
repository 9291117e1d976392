"""The Stable Diffusion denoising UNet (Rombach et al., CVPR 2022, arXiv 2112.10752).

Module attribute paths equal the CompVis/A1111 checkpoint keys under
``model.diffusion_model.`` (``time_embed.0``, ``input_blocks.N.M...``, ``middle_block``,
``output_blocks``, ``out``), so a single-file checkpoint loads with the prefix stripped
and nothing else renamed. Leaves first, root last: timestep embedding, residual block,
attention, transformer, resampling, then :class:`UNetModel`.

The UNet predicts whatever it was trained on (epsilon or v); :mod:`t2i_ldm.denoiser`
turns it into a Karras denoiser.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from t2i_ldm.config import UNetConfig
from t2i_ldm.layers import GroupNorm, attention


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0):
    """Sinusoidal embedding of (possibly fractional) timesteps, as SD does it.

    ``freqs_i = exp(-ln(max_period) * i / half)`` for ``i < half = dim // 2`` and the
    embedding is ``[cos(t * freqs), sin(t * freqs)]`` — cosine first (diffusers:
    ``flip_sin_to_cos=True``, ``downscale_freq_shift=0``). Odd ``dim`` gets a zero column.

    Args:
        timesteps: ``(B,)`` timesteps (float or int).
        dim: embedding width.

    Returns:
        ``(B, dim)`` float32 embedding.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32) / half
    freqs = torch.exp(exponent).to(timesteps.device)  # (half,)
    args = timesteps.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # (B, dim)
    return emb


def sdxl_vector(pooled: torch.Tensor, micro: torch.Tensor, dim: int) -> torch.Tensor:
    """SDXL's ``label_emb`` input: the pooled text, then each micro-conditioning number's
    sinusoidal embedding (Podell et al. 2023, arXiv 2307.01952, section 2.2; sgm's
    ``ConcatTimestepEmbedderND``, diffusers' ``add_time_proj``).

    Args:
        pooled: ``(B, P)`` OpenCLIP bigG pooled, projected text embedding.
        micro: ``(B, K)`` numbers: base ``(orig_h, orig_w, crop_top, crop_left, target_h,
            target_w)``, refiner ``(orig_h, orig_w, crop_top, crop_left, aesthetic_score)``.
        dim: embedding width per number (256).

    Returns:
        ``(B, P + K * dim)`` float32.
    """
    b, k = micro.shape
    fourier = timestep_embedding(micro.reshape(-1), dim).reshape(b, k * dim)  # (B, K*dim)
    return torch.cat([pooled.float(), fourier.to(pooled.device)], dim=-1)


class TimestepBlock(nn.Module):
    """A block whose forward also takes the timestep embedding."""


class ResBlock(TimestepBlock):
    """Residual block with a timestep-embedding bias (CompVis ``ResBlock``).

    ``h = conv(silu(norm(x))) + W emb``; ``out = skip(x) + conv(drop(silu(norm(h))))``.
    Keys: ``in_layers.{0,2}``, ``emb_layers.1``, ``out_layers.{0,3}``, ``skip_connection``.
    """

    def __init__(
        self, channels: int, emb_channels: int, out_channels: int, groups: int, dropout: float
    ) -> None:
        super().__init__()
        # Index 1 (SiLU) is fused into the GroupNorm; the Identity keeps checkpoint indices.
        self.in_layers = nn.Sequential(
            GroupNorm(groups, channels, eps=1e-5, activation="silu"),
            nn.Identity(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm(groups, out_channels, eps=1e-5, activation="silu"),
            nn.Identity(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # (B, C, 1, 1) broadcast
        h = self.out_layers(h)
        return self.skip_connection(x) + h


class CrossAttention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` (itself when None). Keys ``to_q/k/v``,
    ``to_out.0``; q/k/v have no bias, as in SD.

    :meth:`fuse_projections` (the fast path's lossless step) concatenates the projection
    weights into the non-persistent buffer ``fused_proj``: self-attention then runs one q|k|v
    matmul, cross-attention q and one k|v matmul; the state dict stays as it was.
    """

    def __init__(
        self, query_dim: int, context_dim: int, heads: int, head_dim: int, upcast: bool
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.upcast = heads, upcast
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))
        self.register_buffer("fused_proj", None, persistent=False)
        self._fused_from: tuple | None = None  # _stamp() of the weights fused_proj holds

    def _projections(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.to_q, self.to_k, self.to_v

    def _stamp(self) -> tuple:
        """Which weights, at which in-place version: a copy, a new tensor or an in-place
        update (a merged LoRA, a loaded state dict) changes it."""
        return tuple((id(p), id(p.weight), p.weight._version) for p in self._projections())

    def fuse_projections(self) -> bool:
        """Concatenate the projection weights into ``fused_proj``: q|k|v when q and k read the
        same width (a cross call uses its k|v rows), else k|v. Idempotent. Refused (False, and
        any fusion undone) when a projection is not a plain bias-free ``nn.Linear``: a LoRA
        wrapper (peft) adapts it, so a fused copy would bypass the adapter."""
        layers = self._projections()
        if any(type(p) is not nn.Linear or p.bias is not None for p in layers):
            self.unfuse_projections()
            return False
        if self.fused_proj is not None and self._fused_from == self._stamp():
            return True
        if self.to_q.in_features != self.to_k.in_features:
            layers = layers[1:]
        with torch.inference_mode(False), torch.no_grad():
            weight = torch.cat([p.weight for p in layers])  # (3I or 2I, in)
        self.fused_proj = weight
        self._fused_from = self._stamp()
        return True

    def unfuse_projections(self) -> bool:
        """Drop the fused buffer (back to three matmuls); True when there was one."""
        fused = self.fused_proj is not None
        self.fused_proj, self._fused_from = None, None
        return fused

    def _fused(self) -> torch.Tensor | None:
        """``fused_proj`` when it may stand in for the projections: never while they train (it
        carries no gradient) or once one is wrapped; outside a compiled graph it is re-made
        when a weight changed since it was fused."""
        if self.fused_proj is None:
            return None
        layers = self._projections()
        if any(type(p) is not nn.Linear for p in layers):
            return None
        if torch.is_grad_enabled() and any(p.weight.requires_grad for p in layers):
            return None
        if not torch.compiler.is_compiling() and self._fused_from != self._stamp():
            if not self.fuse_projections():
                return None
        return self.fused_proj

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        fused = self._fused()
        b, s, _ = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], h, -1).transpose(1, 2)  # (B, H, S, D)

        if fused is None:
            context = x if context is None else context
            q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        elif context is None:  # self-attention: fused is q|k|v
            q, k, v = F.linear(x, fused).chunk(3, dim=-1)  # (B, S, I) each
        else:
            q = self.to_q(x)
            k, v = F.linear(context, fused[-2 * q.shape[-1] :]).chunk(2, dim=-1)
        out = attention(split(q), split(k), split(v), upcast=self.upcast)  # (B, H, S, D)
        out = out.transpose(1, 2).reshape(b, s, -1)  # (B, S, H*D)
        return self.to_out(out)


class GEGLU(nn.Module):
    """``a * gelu(g)`` where ``[a, g] = proj(x)`` (Shazeer 2020, "GLU variants")."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU MLP with 4x width; keys ``net.0.proj`` and ``net.2``."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention and GEGLU feed-forward, each residual."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, upcast: bool):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, head_dim, upcast)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, head_dim, upcast)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of a feature map (CompVis ``SpatialTransformer``).

    ``norm`` (GroupNorm, eps 1e-6) -> ``proj_in`` (1x1 conv, or Linear when
    ``linear``) -> transformer blocks with cross-attention to ``context`` -> ``proj_out``
    -> residual.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        depth: int,
        context_dim: int,
        *,
        linear: bool,
        upcast: bool,
        groups: int,
    ) -> None:
        super().__init__()
        head_dim = channels // heads
        inner = heads * head_dim
        self.linear = linear
        self.norm = GroupNorm(groups, channels, eps=1e-6)
        if linear:
            self.proj_in = nn.Linear(channels, inner)
            self.proj_out = nn.Linear(inner, channels)
        else:
            self.proj_in = nn.Conv2d(channels, inner, 1)
            self.proj_out = nn.Conv2d(inner, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, head_dim, context_dim, upcast) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = x.shape
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)  # (B, inner, H, W)
        h = h.flatten(2).transpose(1, 2)  # (B, H*W, C')
        if self.linear:
            h = self.proj_in(h)  # (B, H*W, inner)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear:
            h = self.proj_out(h)  # (B, H*W, C)
        h = h.transpose(1, 2).reshape(b, -1, hh, ww)  # (B, C', H, W)
        if not self.linear:
            h = self.proj_out(h)  # (B, C, H, W)
        return x + h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution, padding 1; key ``op``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 convolution; key ``conv``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ContextPooling(nn.Module):
    """Attention pooling of the context into one vector for the timestep embedding.

    Imagen (Saharia et al. 2022, section 2.2 and appendix) adds a pooled text embedding to the
    timestep embedding beside cross-attention. The query is the mean token plus a learned
    vector; the output MLP's last layer starts at zero, so adding the pooling to a trained
    UNet leaves its predictions unchanged until it is trained.
    """

    def __init__(self, context_dim: int, heads: int, out_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(context_dim)
        self.query = nn.Parameter(torch.zeros(context_dim))
        self.to_q = nn.Linear(context_dim, context_dim)
        self.to_kv = nn.Linear(context_dim, 2 * context_dim)
        self.out = nn.Sequential(
            nn.Linear(context_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` context -> ``(B, out_dim)``."""
        b, t, c = context.shape
        h, d = self.heads, c // self.heads
        x = self.norm(context)
        q = self.to_q(x.mean(dim=1) + self.query).view(b, h, 1, d)
        k, v = self.to_kv(x).view(b, t, 2, h, d).permute(2, 0, 3, 1, 4)  # 2 x (B, h, T, d)
        weights = (q @ k.transpose(-1, -2) * d**-0.5).softmax(dim=-1)  # (B, h, 1, T)
        return self.out((weights @ v).reshape(b, c))


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that hands the time embedding to residual blocks and the context to
    transformers (CompVis ``TimestepEmbedSequential``)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


def _transformer(c: UNetConfig, ch: int, level: int, depth: int | None = None):
    return SpatialTransformer(
        ch,
        c.heads_at(level),
        c.depth_at(level) if depth is None else depth,
        c.context_dim,
        linear=c.use_linear_projection,
        upcast=c.upcast_attention,
        groups=c.norm_groups,
    )


def _res(c: UNetConfig, ch_in: int, ch_out: int) -> ResBlock:
    return ResBlock(ch_in, c.time_embed_dim, ch_out, c.norm_groups, c.dropout)


def encoder_blocks(c: UNetConfig) -> tuple[nn.ModuleList, TimestepEmbedSequential, list[int]]:
    """The UNet's way down: ``(input_blocks, middle_block, skip channels per input block)``,
    shared by :class:`UNetModel` and the ControlNet (:mod:`t2i_ldm.controlnet`), whose
    copy of it has the same CompVis keys."""
    input_blocks = nn.ModuleList(
        [TimestepEmbedSequential(nn.Conv2d(c.in_channels, c.model_channels, 3, padding=1))]
    )
    skip_channels = [c.model_channels]
    ch = c.model_channels
    for level in range(c.num_levels):
        for _ in range(c.num_res_blocks):
            layers: list[nn.Module] = [_res(c, ch, c.level_channels(level))]
            ch = c.level_channels(level)
            if c.has_attention(level):
                layers.append(_transformer(c, ch, level))
            input_blocks.append(TimestepEmbedSequential(*layers))
            skip_channels.append(ch)
        if level != c.num_levels - 1:
            input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
            skip_channels.append(ch)
    middle_block = TimestepEmbedSequential(
        _res(c, ch, ch), _transformer(c, ch, c.num_levels - 1, c.middle_depth), _res(c, ch, ch)
    )
    return input_blocks, middle_block, skip_channels


class UNetModel(nn.Module):
    """The SD UNet: ``forward(x, timesteps, context) -> prediction`` (epsilon or v).

    Args:
        config: a :class:`~t2i_ldm.config.UNetConfig` (``SD1_UNET``, ``SD2_UNET``,
            ``TINY_UNET`` ...).

    Attributes:
        gradient_checkpointing: recompute each block in backward to save memory (training).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False
        c = config
        mc, ted, groups = c.model_channels, c.time_embed_dim, c.norm_groups
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        self.context_pool = (
            ContextPooling(c.context_dim, c.context_pooling_heads, ted)
            if c.context_pooling_heads
            else None
        )

        if c.adm_in_channels:  # SDXL: pooled text + micro-conditioning (CompVis label_emb)
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(c.adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted))
            )

        self.input_blocks, self.middle_block, skip_channels = encoder_blocks(c)
        ch = c.level_channels(c.num_levels - 1)

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(c.num_levels)):
            for i in range(c.num_res_blocks + 1):
                layers = [_res(c, ch + skip_channels.pop(), c.level_channels(level))]
                ch = c.level_channels(level)
                if c.has_attention(level):
                    layers.append(_transformer(c, ch, level))
                if level and i == c.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm(groups, ch, eps=1e-5, activation="silu"),
            nn.Identity(),
            nn.Conv2d(ch, c.out_channels, 3, padding=1),
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.out[2].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.out[2].weight.device

    def fuse_projections(self) -> int:
        """Fuse every attention's q/k/v projections (:meth:`CrossAttention.fuse_projections`,
        lossless; what ``t2i.engine.compile_component`` calls); returns how many fused."""
        return sum(m.fuse_projections() for m in self.modules() if isinstance(m, CrossAttention))

    def unfuse_projections(self) -> int:
        """Undo :meth:`fuse_projections`; returns how many attentions were fused."""
        return sum(m.unfuse_projections() for m in self.modules() if isinstance(m, CrossAttention))

    def _add_label(self, emb: torch.Tensor, y: torch.Tensor | None, b: int) -> torch.Tensor:
        width = self.config.adm_in_channels
        if not width:
            if y is not None:
                raise ValueError("this UNet has no label_emb: it takes no vector y")
            return emb
        if y is None or y.ndim != 2 or y.shape[1] != width:
            got = None if y is None else tuple(y.shape)
            raise ValueError(
                f"this UNet (SDXL-style) needs y of shape (B, {width}): pooled text plus "
                f"micro-conditioning; got {got}"
            )
        if y.shape[0] != b:
            y = y.expand(b, -1) if y.shape[0] == 1 else y
        return emb + self.label_emb(y.to(emb.device, emb.dtype))

    def _run(self, block: TimestepEmbedSequential, h, emb, context) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb, context, use_reentrant=False)
        return block(h, emb, context)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | float,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
        branch: int | None = None,
        deep: torch.Tensor | None = None,
        control: list[torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predict the model output for noisy latents.

        Args:
            x: ``(B, in_channels, H, W)`` noisy latents; H and W multiples of
                ``config.downsample_factor``.
            timesteps: ``(B,)`` or scalar discrete (possibly fractional) timesteps in [0, T).
            context: ``(B, T, context_dim)`` text-encoder states.
            y: ``(B, adm_in_channels)`` vector for ``label_emb`` (SDXL: :func:`sdxl_vector`),
                required exactly when the config has ``adm_in_channels``.
            branch: DeepCache's skip branch (:mod:`t2i_ldm.deepcache`); None (the default)
                runs the plain UNet and returns the prediction alone.
            deep: with ``branch``: the cached deep feature (the input of output block
                ``len - 1 - branch``); None runs every block and returns that feature.
            control: a ControlNet's residuals (:mod:`t2i_ldm.controlnet`), one per input
                block and the middle block's last, added to the skips and the middle
                block's output (Zhang et al. 2023; diffusers'
                ``down_block_additional_residuals`` / ``mid_block_additional_residual``).

        Returns:
            ``(B, out_channels, H, W)`` in the dtype of ``x``; with ``branch``,
            ``(prediction, deep feature)``.
        """
        h, emb, context = self._prepare(x, timesteps, context, y)
        if branch is not None:
            if control is not None:
                raise ValueError("DeepCache skips the blocks a ControlNet steers: use one")
            out, deep = self._deepcache_walk(h, emb, context, branch, deep)
            return out.to(x.dtype), deep
        skips = []
        for block in self.input_blocks:
            h = self._run(block, h, emb, context)
            skips.append(h)
        h = self._run(self.middle_block, h, emb, context)
        if control is not None:
            h, skips = self._add_control(control, h, skips)
        for block in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)  # (B, C + C_skip, H, W)
            h = self._run(block, h, emb, context)
        return self.out(h).to(x.dtype)

    def _add_control(
        self, control: list[torch.Tensor], h: torch.Tensor, skips: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The middle output and the skips plus a ControlNet's residuals (same shapes)."""
        want = [tuple(t.shape) for t in (*skips, h)]
        got = [tuple(t.shape) for t in control]
        if got != want:
            raise ValueError(
                f"the ControlNet gives {len(got)} residuals {got[:2]}... but this UNet needs "
                f"{len(want)} of shapes {want[:2]}...: the ControlNet was made for another model"
            )
        skips = [s + r.to(s.dtype) for s, r in zip(skips, control[:-1])]
        return h + control[-1].to(h.dtype), skips

    def _prepare(
        self, x: torch.Tensor, timesteps, context: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check the inputs; ``(h, emb, context)`` in the UNet's dtype for the blocks."""
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ValueError(
                f"UNet expects x of shape (B, {c.in_channels}, H, W), got {tuple(x.shape)}"
            )
        f = c.downsample_factor
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"latent size {tuple(x.shape[2:])} must be a multiple of {f} for this UNet "
                f"({c.num_levels} levels); use an image size that is a multiple of {f * 8} px"
            )
        if context.ndim != 3 or context.shape[-1] != c.context_dim:
            raise ValueError(
                f"context must be (B, T, {c.context_dim}), got {tuple(context.shape)}; "
                "the text encoder does not match this UNet"
            )
        b = x.shape[0]
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], device=x.device)
        timesteps = timesteps.reshape(-1).to(x.device)  # (B,) or (1,)
        if timesteps.numel() == 1:
            timesteps = timesteps.expand(b)  # (B,)
        elif timesteps.numel() != b:
            raise ValueError(f"timesteps has {timesteps.numel()} entries for a batch of {b}")
        if context.shape[0] != b:
            context = context.expand(b, -1, -1) if context.shape[0] == 1 else context
        dtype = self.dtype
        t_emb = timestep_embedding(timesteps, c.model_channels).to(dtype)  # (B, mc)
        emb = self.time_embed(t_emb)  # (B, ted)
        context = context.to(dtype)
        if self.context_pool is not None:
            emb = emb + self.context_pool(context)
        emb = self._add_label(emb, y, b)
        return x.to(dtype), emb, context

    def _deepcache_walk(
        self, h, emb, context, branch: int, deep: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DeepCache's two passes (:mod:`t2i_ldm.deepcache`): with ``deep`` None every block
        runs and the input of output block ``n - 1 - branch`` is returned as the feature to
        cache; with ``deep`` only input blocks ``0..branch`` and output blocks ``n - 1 -
        branch .. n - 1`` run, ``deep`` standing in for everything below them."""
        n = len(self.output_blocks)
        if isinstance(branch, bool) or not isinstance(branch, int) or not 0 <= branch < n:
            raise ValueError(f"DeepCache branch must be an integer in [0, {n - 1}], got {branch!r}")
        cut = n - 1 - branch  # the first output block a cached step runs
        skips = []
        for i in range(len(self.input_blocks) if deep is None else branch + 1):
            h = self._run(self.input_blocks[i], h, emb, context)
            skips.append(h)
        if deep is None:
            h = self._run(self.middle_block, h, emb, context)
            for i in range(cut):
                h = torch.cat([h, skips.pop()], dim=1)
                h = self._run(self.output_blocks[i], h, emb, context)
            deep = h  # (B, C, h, w): what comes up from below the shallow blocks
        h = deep
        for i in range(cut, n):
            h = torch.cat([h, skips.pop()], dim=1)  # (B, C + C_skip, H, W)
            h = self._run(self.output_blocks[i], h, emb, context)
        return self.out(h), deep
