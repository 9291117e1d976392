"""An IP-Adapter image prompt while sampling: the ``Ldm.ApplyIPAdapter`` node and the ``ldm``
recipe's ``ip_adapter`` option.

``Engine.build("ldm", checkpoint=..., ip_adapter="ip-adapter_sd15.safetensors")`` (the CLIP
vision folder: ``image_encoder=``, default ``image_encoder/`` beside the file or one level
up) puts an ``Ldm.ApplyIPAdapter`` between the UNet and each ``Guide`` (txt2img, img2img,
hires); a request gives ``ip_image`` (an image or a path) and ``ip_scale`` (diffusers'
``set_ip_adapter_scale``, default 1.0; 0 is the plain model). The image is embedded once per
request (:mod:`t2i_ldm.ip_adapter`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from t2i.graph.node import NodeType, Param, Port

FIELDS = {"ip_image": "image", "ip_scale": "scale"}
"""Request field -> ``Ldm.ApplyIPAdapter`` parameter."""
INFOTEXT_FIELDS = {"ip_scale": "IP-Adapter scale"}


def image_tokens(adapter: Any, encoder: Any, processor: Any, image: Any) -> tuple:
    """``(tokens, negative tokens)``, each ``(1, n, width)`` float32 on the CPU: the adapter's
    projection of the image's CLIP embedding and of an all-zero embedding."""
    from t2i_ldm.controlnet_preprocess import load_control_image

    pixels = processor(load_control_image(image), return_tensors="pt").pixel_values
    with torch.inference_mode():
        embeds = encoder(pixels.to(encoder.dtype)).image_embeds.float()
        both = adapter.projection(torch.cat([embeds, torch.zeros_like(embeds)]))
    return both[:1], both[1:]


class ApplyIPAdapter(NodeType):
    description = (
        "Prompt an SD UNet with an image (IP-Adapter): DENOISER -> the same denoiser whose "
        "cross-attentions also read the image's tokens."
    )
    inputs = (Port("model", "DENOISER"),)
    outputs = (Port("model", "DENOISER"),)
    params = (
        Param("adapter", str, "", "IP-Adapter file"),
        Param("image_encoder", str, "", "its CLIP vision folder"),
        Param("image", object, None, "the image prompt: PIL image or path"),
        Param("scale", float, 1.0, "the image tokens' weight", minimum=0, maximum=4),
        Param("allow_pickle", bool, False, "read a .bin adapter you trust"),
    )

    def execute(self, ctx, *, model, adapter, image_encoder, image, scale, allow_pickle):
        from t2i_ldm.ip_adapter import ImagePrompt, load_image_encoder, load_ip_adapter

        if image is None:
            raise ValueError(
                "this pipeline was built with an IP-Adapter: give the image prompt "
                "(ip_image=PATH_OR_IMAGE, or --option ip_image=PATH)"
            )
        if not hasattr(model, "with_image_prompt"):
            raise TypeError(f"{type(model).__name__} cannot take an IP-Adapter")
        loaded = load_ip_adapter(adapter, allow_pickle=allow_pickle)
        encoder, processor = load_image_encoder(image_encoder)
        tokens, negative = image_tokens(loaded, encoder, processor, image)
        prompt = ImagePrompt(loaded.steered(model.unet, scale), tokens, negative)
        return {"model": model.with_image_prompt(prompt)}


def attach_ip_adapter(recipe: Any, adapter: str, encoder: str, *, allow_pickle: bool) -> Any:
    """The ``ldm`` recipe with an ``Ldm.ApplyIPAdapter`` before each guide of its graphs (after
    any ControlNet node), its request fields bound and the PNG fields."""
    from t2i_ldm.controlnet_apply import PASSES, model_title, with_bound_fields

    bound: dict[bool, dict[str, list]] = {False: {}, True: {}}
    for img2img, graph in ((False, recipe.graph), (True, recipe.img2img_graph)):
        for guide, _ in PASSES if graph is not None else ():
            if guide not in graph:
                continue
            node_id = f"ip_adapter_{guide}"
            graph.add(node_id, "Ldm.ApplyIPAdapter", model=graph[guide].inputs["model"],
                      adapter=adapter, image_encoder=encoder,
                      allow_pickle=allow_pickle)  # fmt: skip
            graph.connect(graph[node_id]["model"], guide, "model")
            for field, param in FIELDS.items():
                bound[img2img].setdefault(field, []).append((node_id, param))
    infotext = {"IP-Adapter": model_title(adapter)}
    return with_bound_fields(recipe, bound, infotext, INFOTEXT_FIELDS)


def checked_paths(adapter: str | os.PathLike, encoder: str | os.PathLike | None, pickle: bool):
    """``(adapter, encoder folder)`` as strings, both read now so a bad one fails at build."""
    from t2i_ldm.ip_adapter import image_encoder_folder, load_image_encoder, load_ip_adapter

    load_ip_adapter(adapter, allow_pickle=pickle)
    folder = str(image_encoder_folder(adapter, encoder))
    load_image_encoder(folder)
    return str(adapter), folder
