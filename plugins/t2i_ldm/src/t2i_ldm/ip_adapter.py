"""IP-Adapter (Ye et al. 2023, "IP-Adapter: Text Compatible Image Prompt Adapter with
Decoupled Cross-Attention", arXiv 2308.06721): an image as a prompt for SD 1.x/2.x and SDXL
UNets.

A frozen CLIP vision tower (transformers' ``CLIPVisionModelWithProjection``, the adapter's
``image_encoder`` folder) embeds the image; the adapter's projection (``image_proj``: a
linear layer to ``n`` tokens of the UNet's context width, then LayerNorm) makes ``n`` image
tokens; every cross-attention of the UNet gets a second key / value projection of them
(``ip_adapter.K.to_k_ip`` / ``to_v_ip``, ``K`` = 1, 3, 5 ... in diffusers' attention
processor order: down blocks, up blocks, middle block), and its output is
``to_out(attn(q, text) + scale * attn(q, image tokens))``. The negative prompt's rows get the
tokens of an all-zero image embedding (diffusers' ``encode_image``).

Files: h94/IP-Adapter's ``ip-adapter_sd15.safetensors`` / ``ip-adapter_sdxl.safetensors``
layout (``image_proj.proj``, ``image_proj.norm``, ``ip_adapter.K.to_{k,v}_ip``; ``.bin``
pickles of the same dict with ``allow_pickle``). The "plus" / "full face" / "FaceID"
variants (a resampler or MLP projection) are refused, naming the variant.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from t2i.checkpoints import CheckpointError, open_checkpoint
from t2i_ldm.layers import attention

TOKENS = 4
"""Image tokens of the plain IP-Adapter projection."""


class ImageProjection(nn.Module):
    """CLIP image embedding ``(B, E)`` -> ``(B, tokens, width)`` (keys ``proj``, ``norm``)."""

    def __init__(self, embed_dim: int, width: int, tokens: int = TOKENS) -> None:
        super().__init__()
        self.tokens = tokens
        self.proj = nn.Linear(embed_dim, tokens * width)
        self.norm = nn.LayerNorm(width)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        out = self.proj(embeds.to(self.proj.weight.dtype))
        return self.norm(out.reshape(embeds.shape[0], self.tokens, -1))


class IPAttention(nn.Module):
    """A UNet cross-attention (``base``, shared) with the adapter's image keys and values:
    the context's last ``tokens`` positions are the image tokens."""

    def __init__(self, base: nn.Module, to_k_ip: nn.Linear, to_v_ip: nn.Linear, tokens: int):
        super().__init__()
        self.base, self.to_k_ip, self.to_v_ip = base, to_k_ip, to_v_ip
        self.tokens = tokens
        self.scale = 1.0

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        base = self.base
        text, image = context[:, : -self.tokens], context[:, -self.tokens :]
        b, s, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], base.heads, -1).transpose(1, 2)  # (B, H, S, D)

        q = split(base.to_q(x))
        out = attention(q, split(base.to_k(text)), split(base.to_v(text)), upcast=base.upcast)
        if self.scale:
            k, v = split(self.to_k_ip(image)), split(self.to_v_ip(image))
            out = out + self.scale * attention(q, k, v, upcast=base.upcast)
        return base.to_out(out.transpose(1, 2).reshape(b, s, -1))


def cross_attentions(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """The UNet's cross-attentions (``attn2``) in diffusers' attention-processor order (down
    blocks, up blocks, middle block), each by its module path."""
    from t2i_ldm.keymaps import unet_key_map

    found = {n: m for n, m in unet.named_modules() if n.endswith(".attn2")}
    names = unet_key_map(unet.config, [f"{n}.to_q.weight" for n in found])
    section = {"down_blocks": 0, "up_blocks": 1, "mid_block": 2}

    def order(name: str) -> tuple:
        theirs = names[f"{name}.to_q.weight"]
        numbers = [int(n) for n in re.findall(r"\.(\d+)\.", f".{theirs}")]
        return (section[theirs.split(".")[0]], *numbers)

    return sorted(found.items(), key=lambda item: order(item[0]))


@attrs.frozen(eq=False)
class IPAdapter:
    """An adapter file: its projection and one ``(to_k_ip, to_v_ip)`` pair per cross-attention
    (diffusers order)."""

    projection: ImageProjection
    layers: tuple[tuple[nn.Linear, nn.Linear], ...]

    @property
    def tokens(self) -> int:
        return self.projection.tokens

    def steered(self, unet: nn.Module, scale: float) -> nn.Module:
        """A copy of ``unet`` (its tensors shared) whose cross-attentions read the image
        tokens at ``scale``."""
        from t2i.modules import copy_with_tensors

        copy = copy_with_tensors(unet)
        attentions = cross_attentions(copy)
        if len(attentions) != len(self.layers):
            raise ValueError(
                f"this IP-Adapter has {len(self.layers)} cross-attention layers but the UNet "
                f"{len(attentions)}: it was made for another model"
            )
        ref = next(unet.parameters())
        for (name, base), (k, v) in zip(attentions, self.layers):
            parent, _, leaf = name.rpartition(".")
            k, v = (_linear(w, ref) for w in (k, v))
            layer = IPAttention(base, k, v, self.tokens)
            layer.scale = float(scale)
            setattr(copy.get_submodule(parent), leaf, layer)
        return copy


def _linear(layer: nn.Linear, like: torch.Tensor) -> nn.Linear:
    """``layer`` on ``like``'s device and dtype (a new module; the loaded one stays)."""
    out = nn.Linear(layer.in_features, layer.out_features, bias=False, device="meta")
    out.weight = nn.Parameter(layer.weight.detach().to(like.device, like.dtype), False)
    return out


VARIANTS = {
    "proj.3.weight": "IP-Adapter Full Face",
    "latents": "IP-Adapter Plus",
    "perceiver_resampler.proj_in.weight": "IP-Adapter FaceID Plus",
}
"""``image_proj`` keys of the variants not implemented (their projection is not linear)."""


def _check_plain(keys: set[str], path: Path) -> None:
    for key, variant in VARIANTS.items():
        if f"image_proj.{key}" in keys:
            raise CheckpointError(
                f"an {variant} file: only the plain IP-Adapter (image_proj.proj + norm) is "
                "implemented",
                path=path,
                fix="use ip-adapter_sd15.safetensors / ip-adapter_sdxl.safetensors",
            )
    if "image_proj.proj.weight" not in keys:
        raise CheckpointError(
            "not an IP-Adapter: expected image_proj.proj.weight and ip_adapter.N.to_k_ip.weight",
            path=path,
            fix="give an IP-Adapter file (h94/IP-Adapter layout)",
        )


def load_ip_adapter(path: str | os.PathLike, *, allow_pickle: bool = False) -> IPAdapter:
    """The adapter of ``path`` (read once per file while it is unchanged).

    Raises:
        CheckpointError: unreadable, another variant, or not an IP-Adapter (named).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such IP-Adapter file", path=path, fix="check the path")
    st = path.stat()
    return _load_cached(str(path.resolve()), (st.st_mtime_ns, st.st_size), allow_pickle)


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, stamp: tuple, allow_pickle: bool) -> IPAdapter:
    with open_checkpoint(path, allow_pickle=allow_pickle) as reader:
        keys = set(reader.keys())
        _check_plain(keys, Path(path))
        proj = reader.get("image_proj.proj.weight")
        width = int(reader.shape("image_proj.norm.weight")[0])
        projection = ImageProjection(proj.shape[1], width, proj.shape[0] // width)
        projection.load_state_dict(
            {k: reader.get(f"image_proj.{k}").float() for k in projection.state_dict()}
        )
        ids = sorted({int(m.group(1)) for k in keys if (m := re.match(r"ip_adapter\.(\d+)\.", k))})
        layers = []
        for i in ids:
            pair = []
            for name in ("to_k_ip", "to_v_ip"):
                weight = reader.get(f"ip_adapter.{i}.{name}.weight").float()
                linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
                linear.weight = nn.Parameter(weight, requires_grad=False)
                pair.append(linear)
            layers.append(tuple(pair))
    return IPAdapter(projection.eval(), tuple(layers))


def image_encoder_folder(adapter: str | os.PathLike, encoder: str | os.PathLike | None) -> Path:
    """The CLIP vision folder: ``encoder`` if given, else ``image_encoder/`` beside the
    adapter file or one level up (h94/IP-Adapter's ``models/image_encoder``)."""
    if encoder is not None:
        return Path(encoder)
    here = Path(adapter).parent
    for folder in (here / "image_encoder", here.parent / "image_encoder"):
        if (folder / "config.json").is_file():
            return folder
    raise CheckpointError(
        "no image_encoder folder beside the IP-Adapter (nor one level up)",
        path=adapter,
        fix="pass image_encoder=FOLDER (a CLIPVisionModelWithProjection folder, e.g. "
        "h94/IP-Adapter's models/image_encoder)",
    )


@functools.lru_cache(maxsize=2)
def load_image_encoder(folder: str) -> tuple[Any, Any]:
    """``(CLIPVisionModelWithProjection, CLIPImageProcessor)`` of a transformers folder (its
    ``preprocessor_config.json`` if there, else CLIP's defaults, as diffusers uses them)."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    if not (Path(folder) / "config.json").is_file():
        raise CheckpointError(
            "not a CLIP vision folder (no config.json)",
            path=folder,
            fix="pass image_encoder=FOLDER holding CLIPVisionModelWithProjection's files",
        )
    model = CLIPVisionModelWithProjection.from_pretrained(folder).eval()
    has_config = (Path(folder) / "preprocessor_config.json").is_file()
    processor = CLIPImageProcessor.from_pretrained(folder) if has_config else CLIPImageProcessor()
    return model, processor


@attrs.frozen(eq=False)
class ImagePrompt:
    """What the UNet predictor uses: the steered UNet copy and the image tokens of the
    prompt's rows (``tokens``) and the negative's (``negative_tokens``), each ``(1, n, W)``."""

    unet: nn.Module
    tokens: torch.Tensor
    negative_tokens: torch.Tensor

    def extend(self, context: torch.Tensor, negative: torch.Tensor | None) -> torch.Tensor:
        """``context`` with each row's image tokens appended."""
        b = context.shape[0]
        pos = self.tokens.to(context.device, context.dtype).expand(b, -1, -1)
        if negative is not None:
            neg = self.negative_tokens.to(context.device, context.dtype).expand(b, -1, -1)
            pos = torch.where(negative.to(context.device)[:, None, None], neg, pos)
        return torch.cat([context, pos], dim=1)
