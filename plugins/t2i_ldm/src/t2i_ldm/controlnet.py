"""ControlNet (Zhang, Rao & Agrawala, "Adding Conditional Control to Text-to-Image Diffusion
Models", ICCV 2023, arXiv 2302.05543) for SD 1.x / 2.x and SDXL UNets.

A trainable copy of the UNet's way down (time embedding, input blocks, middle block) reads
the noisy latent and, added after its first block, a control image (edges, depth, pose ...)
embedded by a small convolutional stack to the latent's size; a zero-initialised 1x1
convolution per input block and one after the middle block give the residuals the UNet adds
to its skips and its middle output (:meth:`t2i_ldm.unet.UNetModel.forward`'s ``control``).

Module paths equal the keys of lllyasviel's ControlNet files under ``control_model.``
(``input_hint_block.N``, ``input_blocks``, ``zero_convs.N.0``, ``middle_block_out.0``; an
SDXL one's ``label_emb`` too, which reads the UNet's pooled-text + micro-conditioning vector),
the format A1111's ControlNet extension and ComfyUI load; diffusers' ``ControlNetModel`` keys
are mapped in :mod:`t2i_ldm.controlnet_checkpoint`. The control image is RGB in [0, 1] at 8x
the latent's size.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from t2i_ldm.config import UNetConfig
from t2i_ldm.unet import ContextPooling, TimestepEmbedSequential, UNetModel, encoder_blocks

EMBEDDING_CHANNELS = (16, 32, 96, 256)
"""Widths of the control image's embedding stack (CompVis ``input_hint_block``; diffusers'
``conditioning_embedding_out_channels``): each width twice, stride 2 between."""


def hint_block(channels: int, widths: tuple[int, ...], out: int) -> TimestepEmbedSequential:
    """The control image's embedding, 3x3 convolutions with SiLU between: ``channels -> w0``,
    then per width ``w_i -> w_i`` and ``w_i -> w_{i+1}`` at stride 2, then ``-> out``
    (keys ``0, 2, 4 ...``: the SiLUs take the odd indices)."""
    layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1), nn.SiLU()]
    for a, b in itertools.pairwise(widths):
        layers += [nn.Conv2d(a, a, 3, padding=1), nn.SiLU()]
        layers += [nn.Conv2d(a, b, 3, padding=1, stride=2), nn.SiLU()]
    layers.append(nn.Conv2d(widths[-1], out, 3, padding=1))
    return TimestepEmbedSequential(*layers)


class ControlNetModel(nn.Module):
    """``forward(x, hint, timesteps, context) -> residuals`` for a UNet of ``config``.

    Args:
        config: the UNet's configuration (its ``in_channels`` are the latent's; with
            ``adm_in_channels`` an SDXL ControlNet, with ``label_emb``).
        hint_channels: channels of the control image (3).
        embedding_channels: the hint stack's widths (:data:`EMBEDDING_CHANNELS`).
    """

    def __init__(
        self,
        config: UNetConfig,
        hint_channels: int = 3,
        embedding_channels: tuple[int, ...] = EMBEDDING_CHANNELS,
    ) -> None:
        super().__init__()
        if len(embedding_channels) < 2:
            raise ValueError(f"the hint stack needs at least 2 widths, got {embedding_channels}")
        self.config = config
        self.hint_channels = hint_channels
        self.embedding_channels = tuple(embedding_channels)
        mc, ted = config.model_channels, config.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        self.context_pool = (  # what UNetModel._prepare reads (ldm-shapes' pooled text)
            ContextPooling(config.context_dim, config.context_pooling_heads, ted)
            if config.context_pooling_heads
            else None
        )
        if config.adm_in_channels:  # SDXL: the UNet's label_emb, own weights
            self.label_emb = nn.Sequential(
                nn.Sequential(
                    nn.Linear(config.adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted)
                )
            )
        self.input_hint_block = hint_block(hint_channels, self.embedding_channels, mc)
        self.input_blocks, self.middle_block, skip_channels = encoder_blocks(config)
        self.zero_convs = nn.ModuleList(
            TimestepEmbedSequential(nn.Conv2d(ch, ch, 1)) for ch in skip_channels
        )
        ch = config.level_channels(config.num_levels - 1)
        self.middle_block_out = TimestepEmbedSequential(nn.Conv2d(ch, ch, 1))

    # the UNet's input checks and timestep embedding, on this copy of its way down
    _prepare = UNetModel._prepare
    _add_label = UNetModel._add_label

    @property
    def downscale(self) -> int:
        """Pixels of control image per latent cell (8 for SD's hint stack)."""
        return 2 ** (len(self.embedding_channels) - 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.middle_block_out[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.middle_block_out[0].weight.device

    def forward(
        self,
        x: torch.Tensor,
        hint: torch.Tensor,
        timesteps: torch.Tensor | float,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The residuals for the UNet at ``x``: one per input block, then the middle block's.

        Args:
            x: ``(B, in_channels, h, w)`` noisy latents, as the UNet gets them.
            hint: ``(B, hint_channels, h * downscale, w * downscale)`` control image in [0, 1].
            timesteps, context, y: as :meth:`t2i_ldm.unet.UNetModel.forward` (``y`` for an
                SDXL ControlNet).
        """
        h, emb, context = self._prepare(x, timesteps, context, y)
        size = (h.shape[-2] * self.downscale, h.shape[-1] * self.downscale)
        if hint.ndim != 4 or hint.shape[1] != self.hint_channels or hint.shape[-2:] != size:
            raise ValueError(
                f"the control image must be (B, {self.hint_channels}, {size[0]}, {size[1]}) for "
                f"a {tuple(h.shape[-2:])} latent, got {tuple(hint.shape)}"
            )
        if hint.shape[0] != h.shape[0]:
            hint = hint.expand(h.shape[0], -1, -1, -1)
        guided = self.input_hint_block(hint.to(h.device, h.dtype), emb, context)
        out = []
        for i, (block, zero) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if i == 0:
                h = h + guided
            out.append(zero(h, emb, context))
        h = self.middle_block(h, emb, context)
        out.append(self.middle_block_out(h, emb, context))
        return out
