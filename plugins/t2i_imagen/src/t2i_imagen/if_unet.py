"""The DeepFloyd IF UNet, with the parameter names of diffusers' ``UNet2DConditionModel``.

IF's UNets (stage I: 64 px from T5 states; stage II: x4 super-resolution, 6 input channels)
are ADM-style UNets (Dhariwal & Nichol 2021; Saharia et al. 2022): ResNet blocks with a
scale-shift time embedding, up/downsampling inside ResNet blocks, attention whose keys and
values are the text tokens (projected by ``add_k_proj``/``add_v_proj``, group-normed first)
concatenated with the pixels' own (unless ``only_cross_attention``), an attention pooling of
the T5 states added to the time embedding (``addition_embed_type="text"``), and for stage II
the noise level embedded like a timestep and added too (``class_embed_type="timestep"``).
The output has ``2 * 3`` channels: epsilon and the learned-range variance interpolation
(Nichol & Dhariwal 2021); the engine's samplers read the first 3.

:class:`~t2i_imagen.if_config.IFUNetConfig` (its own module, free of network code) reads the
keys of a diffusers ``unet/config.json`` that IF uses and refuses the others, so loading a
diffusers folder is a plain ``load_state_dict``.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from t2i_imagen.if_config import (  # noqa: F401 (re-exported: the config's old home)
    DOWN_BLOCKS,
    MID_BLOCK,
    UP_BLOCKS,
    IFUNetConfig,
)

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish}


def sinusoidal(t: torch.Tensor, dim: int, flip: bool, shift: float) -> torch.Tensor:
    """diffusers' ``get_timestep_embedding`` (DDPM's sinusoidal embedding), float32."""
    half = dim // 2
    exponent = -math.log(10_000) * torch.arange(half, dtype=torch.float32, device=t.device)
    emb = t[:, None].float() * torch.exp(exponent / (half - shift))[None]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepMLP(nn.Module):
    """``linear_1 -> act -> linear_2`` (diffusers' ``TimestepEmbedding``)."""

    def __init__(self, cin: int, cout: int, act: str) -> None:
        super().__init__()
        self.linear_1, self.act, self.linear_2 = (
            nn.Linear(cin, cout),
            ACTIVATIONS[act](),
            nn.Linear(cout, cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class AttentionPool(nn.Module):
    """IF's attention pooling of the text states: a mean token (plus a learned offset) attends
    to itself and the tokens; the scale is split over q and k as in IF (fp16 stable)."""

    def __init__(self, heads: int, width: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(1, width) / width**0.5)
        self.k_proj, self.q_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, width = x.shape
        d = width // self.heads
        cls = x.mean(dim=1, keepdim=True) + self.positional_embedding.to(x.dtype)
        x = torch.cat([cls, x], dim=1)
        split = lambda t: t.view(b, -1, self.heads, d).transpose(1, 2)  # noqa: E731
        scale = 1 / math.sqrt(math.sqrt(d))
        q, k, v = (
            split(self.q_proj(cls)) * scale,
            split(self.k_proj(x)) * scale,
            split(self.v_proj(x)),
        )
        w = torch.softmax((q @ k.transpose(-1, -2)).float(), dim=-1).to(q.dtype)
        return (w @ v).transpose(1, 2).reshape(b, width)


class TextTimeEmbedding(nn.Module):
    """``norm1 -> pool -> proj -> norm2``: the pooled text added to the time embedding."""

    def __init__(self, width: int, time_dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.pool = nn.LayerNorm(width), AttentionPool(heads, width)
        self.proj, self.norm2 = nn.Linear(width, time_dim), nn.LayerNorm(time_dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.proj(self.pool(self.norm1(text))))


class ResnetBlock(nn.Module):
    """diffusers' ``ResnetBlock2D`` as IF configures it (optionally up/down inside)."""

    def __init__(self, cin: int, cout: int, cfg: IFUNetConfig, *, up=False, down=False) -> None:
        super().__init__()
        g, eps = cfg.norm_num_groups, cfg.norm_eps
        self.scale_shift = cfg.resnet_time_scale_shift == "scale_shift"
        self.skip_time_act, self.out_scale = cfg.resnet_skip_time_act, cfg.resnet_out_scale_factor
        self.up, self.down = up, down
        self.norm1 = nn.GroupNorm(g, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(cfg.time_embed_dim, cout * (2 if self.scale_shift else 1))
        self.norm2 = nn.GroupNorm(g, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.act = ACTIVATIONS[cfg.act_fn]()
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.avg_pool2d(x, 2, 2) if self.down else x

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self._resample(self.act(self.norm1(x)))
        x = self._resample(x)
        h = self.conv1(h)
        t = self.time_emb_proj(temb if self.skip_time_act else self.act(temb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = t.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + t)
        h = self.conv2(self.act(h))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.out_scale


class AddedKVAttention(nn.Module):
    """diffusers' ``Attention`` with ``added_kv_proj_dim`` (``AttnAddedKVProcessor``): the
    text's keys/values first, then (unless ``only_cross``) the pixels' own; residual."""

    def __init__(self, channels: int, head_dim: int, cfg: IFUNetConfig, only_cross: bool):
        super().__init__()
        text, self.heads = cfg.cross_attention_dim, channels // head_dim
        self.group_norm = nn.GroupNorm(cfg.norm_num_groups, channels, eps=1e-5)
        self.norm_cross = (
            nn.GroupNorm(32, text, eps=1e-5) if cfg.cross_attention_norm == "group_norm" else None
        )
        inner = self.heads * head_dim
        self.to_q = nn.Linear(channels, inner)
        self.to_k = None if only_cross else nn.Linear(channels, inner)
        self.to_v = None if only_cross else nn.Linear(channels, inner)
        self.add_k_proj, self.add_v_proj = nn.Linear(text, inner), nn.Linear(text, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, channels)])

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wdt = x.shape
        h = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        if self.norm_cross is not None:
            text = self.norm_cross(text.transpose(1, 2)).transpose(1, 2)
        k, v = self._heads(self.add_k_proj(text)), self._heads(self.add_v_proj(text))
        if self.to_k is not None:
            k = torch.cat([k, self._heads(self.to_k(h))], dim=2)
            v = torch.cat([v, self._heads(self.to_v(h))], dim=2)
        out = F.scaled_dot_product_attention(self._heads(self.to_q(h)), k, v)
        out = self.to_out[0](out.transpose(1, 2).reshape(b, -1, c))
        return x + out.transpose(1, 2).reshape(b, c, hgt, wdt)


class DownBlock(nn.Module):
    """``ResnetDownsampleBlock2D`` / ``SimpleCrossAttnDownBlock2D``."""

    def __init__(self, kind: str, cin: int, cout: int, cfg: IFUNetConfig, spec: dict, last: bool):
        super().__init__()
        n = spec["layers"]
        self.resnets = nn.ModuleList(
            ResnetBlock(cin if i == 0 else cout, cout, cfg) for i in range(n)
        )
        self.attentions = None
        if kind == "SimpleCrossAttnDownBlock2D":
            self.attentions = nn.ModuleList(
                AddedKVAttention(cout, spec["head_dim"], cfg, spec["only_cross"]) for _ in range(n)
            )
        self.downsamplers = (
            None if last else nn.ModuleList([ResnetBlock(cout, cout, cfg, down=True)])
        )

    def forward(self, x, temb, text):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, text)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x, temb)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """``ResnetUpsampleBlock2D`` / ``SimpleCrossAttnUpBlock2D`` (layers + 1 resnets)."""

    def __init__(self, kind, cin, cout, prev, cfg: IFUNetConfig, spec: dict, last: bool):
        super().__init__()
        n = spec["layers"] + 1
        self.resnets = nn.ModuleList(
            ResnetBlock((prev if i == 0 else cout) + (cin if i == n - 1 else cout), cout, cfg)
            for i in range(n)
        )
        self.attentions = None
        if kind == "SimpleCrossAttnUpBlock2D":
            self.attentions = nn.ModuleList(
                AddedKVAttention(cout, spec["head_dim"], cfg, spec["only_cross"]) for _ in range(n)
            )
        self.upsamplers = None if last else nn.ModuleList([ResnetBlock(cout, cout, cfg, up=True)])

    def forward(self, x, skips, temb, text):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, text)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, temb)
        return x


class MidBlock(nn.Module):
    """``UNetMidBlock2DSimpleCrossAttn``: resnet, attention, resnet."""

    def __init__(self, channels: int, cfg: IFUNetConfig, head_dim: int) -> None:
        super().__init__()
        mid = attrs.evolve(cfg, resnet_out_scale_factor=cfg.mid_block_scale_factor)
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, mid) for _ in range(2)])
        self.attentions = nn.ModuleList(
            [AddedKVAttention(channels, head_dim, cfg, cfg.mid_only_cross)]
        )

    def forward(self, x, temb, text):
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, text), temb)


class IFUNet(nn.Module):
    """``(sample, timestep, text, class_labels) -> (B, out_channels, H, W)``.

    ``text`` is the T5 states ``(B, T, text_width)``; ``class_labels`` the stage II noise
    level ``(B,)`` (required when ``class_embed_type="timestep"``, refused otherwise).
    """

    def __init__(self, config: IFUNetConfig) -> None:
        super().__init__()
        config.check()
        cfg = self.config = config
        ch, td = cfg.block_out_channels, cfg.time_embed_dim
        self.time_embedding = TimestepMLP(ch[0], td, cfg.act_fn)
        self.class_embedding = TimestepMLP(ch[0], td, cfg.act_fn) if cfg.super_resolution else None
        self.encoder_hid_proj = (
            nn.Linear(cfg.encoder_hid_dim, cfg.cross_attention_dim) if cfg.encoder_hid_dim else None
        )
        self.add_embedding = None
        if cfg.addition_embed_type == "text":
            self.add_embedding = TextTimeEmbedding(
                cfg.text_width, td, cfg.addition_embed_type_num_heads
            )
        self.time_embed_act = (
            ACTIVATIONS[cfg.time_embedding_act_fn]() if cfg.time_embedding_act_fn else None
        )
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        specs, n = cfg.per_block(), len(ch)
        self.down_blocks = nn.ModuleList(
            DownBlock(kind, ch[max(i - 1, 0)], ch[i], cfg, specs[i], i == n - 1)
            for i, kind in enumerate(cfg.down_block_types)
        )
        self.mid_block = MidBlock(ch[-1], cfg, specs[-1]["head_dim"])
        rev = list(reversed(ch))
        up_specs = [
            {**specs[n - 1 - i], "head_dim": specs[i]["head_dim"]} for i in range(n)
        ]  # diffusers
        self.up_blocks = nn.ModuleList(
            UpBlock(
                kind,
                rev[min(i + 1, n - 1)],
                rev[i],
                rev[max(i - 1, 0)],
                cfg,
                up_specs[i],
                i == n - 1,
            )
            for i, kind in enumerate(cfg.up_block_types)
        )
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
        self.conv_act = ACTIVATIONS[cfg.act_fn]()
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)

    def export_example(self, tokens: int = 77, batch: int = 2):
        """``(input names, example inputs, dynamic axes)`` of :meth:`forward`: every input has a
        dynamic batch axis (batch 2 in the example, so a trace records no batch-of-one case)."""
        cfg, p = self.config, next(self.parameters())
        size = cfg.sample_size or 64
        gen = torch.Generator().manual_seed(0)

        def r(*shape):
            return torch.randn(*shape, generator=gen).to(device=p.device, dtype=p.dtype)

        names = ["sample", "timestep", "encoder_hidden_states"]
        steps = torch.linspace(900.0, 100.0, batch).to(device=p.device, dtype=p.dtype)
        inputs = [r(batch, cfg.in_channels, size, size), steps, r(batch, tokens, cfg.text_width)]
        if cfg.super_resolution:
            names.append("class_labels")
            inputs.append(torch.linspace(250.0, 50.0, batch).to(device=p.device, dtype=p.dtype))
        axes = {n: {0: "batch"} for n in names}
        axes.update(
            sample={0: "batch", 2: "height", 3: "width"},
            encoder_hidden_states={0: "batch", 1: "tokens"},
            out={0: "batch", 2: "height", 3: "width"},
        )
        return tuple(names), tuple(inputs), axes

    def _embed(self, x, timestep, text, class_labels) -> torch.Tensor:
        cfg, dtype = self.config, x.dtype
        t = sinusoidal(
            timestep.expand(x.shape[0]),
            cfg.block_out_channels[0],
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
        )
        emb = self.time_embedding(t.to(dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("a stage II IF UNet needs the noise level (class_labels)")
            level = sinusoidal(
                class_labels.expand(x.shape[0]),
                cfg.block_out_channels[0],
                cfg.flip_sin_to_cos,
                cfg.freq_shift,
            )
            emb = emb + self.class_embedding(level.to(dtype)).to(dtype)
        if self.add_embedding is not None:
            emb = emb + self.add_embedding(text)
        return self.time_embed_act(emb) if self.time_embed_act is not None else emb

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        text = text.to(sample.dtype)
        emb = self._embed(sample, timestep, text, class_labels)
        if self.encoder_hid_proj is not None:
            text = self.encoder_hid_proj(text)
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, out = block(x, emb, text)
            skips += out
        x = self.mid_block(x, emb, text)
        for block in self.up_blocks:
            n = len(block.resnets)
            x = block(x, skips[-n:], emb, text)
            del skips[-n:]
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))
