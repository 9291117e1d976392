"""SD inpainting checkpoints: the 9-channel UNet input (noisy latent + mask + masked image).

An inpainting UNet (``in_channels=9``, LDM's ``conditioning_key="hybrid"``) reads, besides the
4 latent channels, a ``c_concat`` of 5: the mask at the latent's size (1 channel, 1 =
repaint) and the VAE latent of the masked init image (4), concatenated after the latent's
``c_in`` scaling, the same for the prompt's and the negative's rows (diffusers'
``StableDiffusionInpaintPipeline``; A1111's ``inpainting_image_conditioning``).

The concatenation travels as the conditioning's :class:`~t2i.payloads.ImageCondition` (the
``Guide`` node attaches it to both conditionings, as for a cascade's low-resolution image):

- :class:`InpaintCondition` (node ``Ldm.InpaintCondition``) builds it: with a mask, the
  mask rounded to 0 / 1 and the init image lerped toward ``image * (1 - mask)`` by A1111's
  ``inpainting_mask_weight`` (1: the masked area is grey); without a mask (txt2img, plain
  img2img) an all-ones mask over a grey image, as A1111 does;
- :func:`concat_image_condition` is what the UNet predictor calls before the UNet;
- :func:`attach_inpaint_condition` links the node into the ``ldm`` recipe's graphs.
"""

from __future__ import annotations

from typing import Any

import torch

from t2i.graph.node import NodeType, Param, Port
from t2i.payloads import Conditioning, Image, ImageCondition


def concat_image_condition(unet: Any, x: torch.Tensor, cond: Any) -> torch.Tensor:
    """``x`` with the conditioning's image channels appended when the UNet takes more input
    channels than ``x`` has (an inpainting UNet); ``x`` unchanged otherwise."""
    extra = unet.config.in_channels - x.shape[1]
    if extra <= 0:
        return x
    image = cond.image if isinstance(cond, Conditioning) else None
    if image is None:
        raise ValueError(
            f"this UNet takes {unet.config.in_channels} input channels (an inpainting model): "
            f"it needs the {extra} channels of mask + masked-image latent "
            "(Ldm.InpaintCondition -> Guide.image_condition; the ldm recipe links it)"
        )
    c = image.image.to(x.device, x.dtype)
    if c.shape[1] != extra or c.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"the image condition is {tuple(c.shape)} but the UNet needs ({x.shape[0]}, "
            f"{extra}, {x.shape[2]}, {x.shape[3]}) beside the latent"
        )
    if c.shape[0] != x.shape[0]:
        c = c.expand(x.shape[0], -1, -1, -1)
    return torch.cat([x, c], dim=1)  # (B, C + 1 + 4, h, w)


class InpaintCondition(NodeType):
    description = (
        "An SD inpainting UNet's extra input: the mask at the latent's size + the VAE latent "
        "of the masked init image (no mask: all ones over a grey image, as A1111's txt2img)."
    )
    inputs = (
        Port("decoder", "DECODER"),
        Port("latent", "LATENT", description="the batch's shape (the sample's size)"),
        Port("image", "IMAGE", optional=True, description="the init image, request size"),
        Port("mask", "MASK", optional=True),
    )
    outputs = (Port("image_condition", "IMAGE_CONDITION"),)
    params = (
        Param(
            "mask_weight",
            float,
            1.0,
            "A1111's inpainting_mask_weight: how far the masked area is greyed out",
            minimum=0.0,
            maximum=1.0,
        ),
    )

    def execute(self, ctx, *, decoder, latent, image, mask, mask_weight):
        h, w = latent.samples.shape[-2:]
        f = decoder.factor
        if image is None:
            pixels = torch.zeros(1, 3, h * f, w * f, device=ctx.device)  # [-1, 1]: grey
            keep = torch.ones(1, 1, h * f, w * f, device=ctx.device)
        else:
            source = image.pixels.to(ctx.device).float() * 2 - 1
            if mask is None:
                keep = torch.ones(1, 1, *source.shape[-2:], device=ctx.device)
            else:
                keep = torch.round(mask.pixels.to(ctx.device).float())  # the UNet saw 0 / 1
            pixels = torch.lerp(source, source * (1 - keep), mask_weight)
        with torch.inference_mode():
            encoded = decoder.encode(Image((pixels + 1) / 2)).samples
        small = torch.nn.functional.interpolate(keep, size=encoded.shape[-2:])  # nearest
        small = small.to(encoded.device, encoded.dtype).expand(encoded.shape[0], -1, -1, -1)
        concat = torch.cat([small, encoded], dim=1)  # (1, 1 + 4, h, w)
        level = torch.zeros(concat.shape[0], device=concat.device, dtype=concat.dtype)
        return {"image_condition": ImageCondition(concat, level)}


MASK_WEIGHT_FIELD = "inpainting_mask_weight"
"""The request field of A1111's "Inpainting conditioning mask strength" setting; its
infotext key is ``Conditional mask weight``, written for every image of an inpainting model."""


def attach_inpaint_condition(recipe: Any) -> Any:
    """The ``ldm`` recipe for an inpainting checkpoint: every ``Guide`` gets an
    ``Ldm.InpaintCondition`` (img2img: of the prepared init image and mask; txt2img and the
    hires pass: of a grey image, at the size that pass samples), and the request field
    ``inpainting_mask_weight`` sets their ``mask_weight``."""
    import attrs

    targets: dict[bool, list[tuple[str, str]]] = {False: [], True: []}
    for img2img, graph in ((False, recipe.graph), (True, recipe.img2img_graph)):
        if graph is None:
            continue
        sources = {"guide": graph["empty_latent"]["latent"]}
        if "guide_hr" in graph:
            sources["guide_hr"] = graph["hires_upscale"]["samples"]
        for guide, latent in sources.items():
            links = {"decoder": graph["decoder"]["decoder"], "latent": latent}
            if img2img:
                links |= {"image": graph["inpaint"]["image"], "mask": graph["inpaint"]["mask"]}
            node = graph.add(f"inpaint_condition_{guide}", "Ldm.InpaintCondition", **links)
            graph.connect(node["image_condition"], guide, "image_condition")
            targets[img2img].append((node.id, "mask_weight"))
    bindings = {**recipe.bindings, MASK_WEIGHT_FIELD: tuple(targets[False])}
    img2img_bindings = recipe.img2img_bindings or recipe.bindings
    img2img_bindings = {**img2img_bindings, MASK_WEIGHT_FIELD: tuple(targets[True])}
    fields = {**recipe.infotext_fields, MASK_WEIGHT_FIELD: "Conditional mask weight"}
    return attrs.evolve(
        recipe, bindings=bindings, img2img_bindings=img2img_bindings, infotext_fields=fields
    )
