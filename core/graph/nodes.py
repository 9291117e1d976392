"""The graph's shape-agnostic node types: load components, tokenize, encode, guide, decode.

They know no model family: every model-specific decision lives in the components they
load by registered name. Each generation shape adds its own sampling node above this
floor, fed by ``Guide`` (and, for diffusion, ``Sigmas``):

- iterative denoising: ``Sigmas + Guide -> SampleDiffusion`` (:mod:`t2i.diffusion.nodes`);
- autoregressive tokens: ``Guide -> SampleTokens`` (:mod:`t2i.autoregressive.nodes`);
- single pass: ``Guide -> SampleOnce`` (:mod:`t2i.single_pass.nodes`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from t2i.files import write_atomically
from t2i.graph.node import REQUIRED, ExecutionContext, NodeType, Param, Port
from t2i.modules import copy_if_moving
from t2i.payloads import GuidedModel, Image, Latent, Mask, SeedVariation


def _place(component: Any, ctx: ExecutionContext) -> Any:
    """Move a component to the run's device/dtype when it can move (``.to``); one whose torch
    modules are elsewhere is copied first (:func:`t2i.modules.copy_if_moving`): loaders share cached
    models between pipelines, and moving one in place moved every pipeline's."""
    component = copy_if_moving(component, ctx.device, ctx.dtype)
    mover = getattr(component, "to", None)
    if callable(mover):
        moved = mover(device=ctx.device)
        component = component if moved is None else moved
        if ctx.dtype is not None:
            moved = component.to(dtype=ctx.dtype)
            component = component if moved is None else moved
    if isinstance(component, torch.nn.Module):
        component.eval()
    return component


_ADAPT_PARAMS = (
    Param("loras", list, [], "LoRA files merged into the component: [[path, scale], ...]"),
    Param("weights", str, "", "fine-tuned weights (safetensors) of the component's modules"),
)
"""Parameters of the loaders of trainable kinds (:func:`t2i.lora.adapt_component`)."""


def _loader(kind: str, socket: str, output: str, adaptable: bool = False) -> type[NodeType]:
    class Load(NodeType):
        description = f"Instantiate a registered {kind} by name (factory options in `options`)."
        outputs = (Port(output, socket),)
        params = (
            Param("name", str, REQUIRED, f"registered {kind} name"),
            Param("options", dict, {}, "keyword options for the factory (checkpoint path ...)"),
            *(_ADAPT_PARAMS if adaptable else ()),
        )

        def execute(
            self, ctx: ExecutionContext, *, name: str, options: dict, **adapt: Any
        ) -> dict[str, Any]:
            component = ctx.registry.create(kind, name, **(options or {}))
            if adapt.get("loras") or adapt.get("weights"):
                from t2i.lora import adapt_component

                component = adapt_component(component, kind, **adapt)
            return {output: _place(component, ctx)}

    Load.__name__ = Load.__qualname__ = f"Load{socket.title().replace('_', '')}"
    return Load


LoadTokenizer = _loader("tokenizer", "TOKENIZER", "tokenizer")
LoadTextEncoder = _loader("text_encoder", "TEXT_ENCODER", "text_encoder", adaptable=True)
LoadDenoiser = _loader("denoiser", "DENOISER", "model", adaptable=True)
LoadDecoder = _loader("decoder", "DECODER", "decoder")


class Tokenize(NodeType):
    description = "Text -> token ids (+ emphasis weights) with a tokenizer component."
    inputs = (Port("tokenizer", "TOKENIZER"),)
    outputs = (Port("tokens", "TOKENS"),)
    params = (
        Param("text", (str, list), "", "a prompt, or a list of prompts (one per row)"),
        Param("fallback", (str, list), "", "used when text is empty (a hires pass: the prompt)"),
    )

    def execute(self, ctx, *, tokenizer, text, fallback):
        text = text or fallback
        texts = [text] if isinstance(text, str) else list(text)
        return {"tokens": tokenizer(texts)}


class EncodeText(NodeType):
    description = "Token ids -> conditioning with a text-encoder component."
    inputs = (Port("text_encoder", "TEXT_ENCODER"), Port("tokens", "TOKENS"))
    outputs = (Port("conditioning", "CONDITIONING"),)

    def execute(self, ctx, *, text_encoder, tokens):
        with torch.inference_mode():
            cond = text_encoder(tokens)
        return {"conditioning": cond}


SEED_RANGE = 2**32
"""Seeds are 32-bit, as in the web UIs: ``seed + i`` past 2**32 - 1 wraps to 0."""


class EmptyLatent(NodeType):
    description = (
        "The shape and seeds of a batch to sample: (B, C, H/f, W/f), or (B, C) when factor is 0. "
        "With a decoder linked, C and f come from it; without one, set both."
    )
    inputs = (Port("decoder", "DECODER", optional=True),)
    outputs = (Port("latent", "LATENT"),)
    params = (
        Param("width", int, 512),
        Param("height", int, 512),
        Param("batch_size", int, 1),
        Param("seed", int, 0, "seed of the first row; row i uses seed + i"),
        Param("channels", (int, type(None)), None, "latent channels (default: the decoder's)"),
        Param("factor", (int, type(None)), None, "pixels per latent cell (default: the decoder's)"),
        Param("subseed", int, 0, "variation seed of the first row; row i uses subseed + i"),
        Param(
            "subseed_strength",
            float,
            0.0,
            "variation strength (A1111): > 0 gives every row the seed and slerps its noise "
            "toward its subseed's",
            minimum=0.0,
            maximum=1.0,
        ),
        Param("seed_resize_from_w", int, 0, "draw the seed noise at this width (0: off)"),
        Param("seed_resize_from_h", int, 0, "draw the seed noise at this height (0: off)"),
    )

    def execute(self, ctx, *, decoder, width, height, batch_size, seed, channels, factor, **var):
        if decoder is not None:
            channels = decoder.channels if channels is None else channels
            factor = decoder.factor if factor is None else factor
        if channels is None or factor is None:
            raise ValueError(
                "EmptyLatent needs its shape: link a decoder, or set both channels and factor"
            )
        if factor:
            for field, value in (("width", width), ("height", height)):
                if value % factor:
                    raise ValueError(
                        f"{field}={value} is not a multiple of the decoder's factor "
                        f"{factor}; use {value - value % factor or factor}"
                    )
            shape = (batch_size, channels, height // factor, width // factor)
        else:
            shape = (batch_size, channels)
        variation = seed_variation(shape, factor, **var)
        step = 0 if variation is not None and variation.strength else 1  # A1111's rule
        seeds = tuple((seed + step * i) % SEED_RANGE for i in range(batch_size))
        return {"latent": Latent(torch.zeros(shape), seeds=seeds, variation=variation)}


def seed_variation(
    shape: tuple[int, ...],
    factor: int,
    *,
    subseed: int,
    subseed_strength: float,
    seed_resize_from_w: int,
    seed_resize_from_h: int,
) -> SeedVariation | None:
    """A1111's variation seeds of a batch of ``shape``, or None when they are off.

    Row ``i`` gets subseed ``subseed + i``; a "resize seed from" size (pixels, both > 0) is
    divided by the decoder's ``factor`` into sample cells (A1111 divides by 8, SD's factor).
    """
    if not 0.0 <= subseed_strength <= 1.0:
        raise ValueError(f"subseed_strength must be in [0, 1], got {subseed_strength}")
    resize = None
    if seed_resize_from_w > 0 and seed_resize_from_h > 0:
        if len(shape) != 4 or not factor:
            raise ValueError("seed_resize_from_w/h needs an image-shaped (B, C, H, W) sample")
        resize = (seed_resize_from_h // factor, seed_resize_from_w // factor)
        if min(resize) < 1:
            raise ValueError(
                f"seed_resize_from {seed_resize_from_w}x{seed_resize_from_h} is under one "
                f"sample cell ({factor} px)"
            )
    if not subseed_strength and resize is None:
        return None
    subseeds = tuple((subseed + i) % SEED_RANGE for i in range(shape[0]))
    return SeedVariation(subseeds, float(subseed_strength), resize)


class Guide(NodeType):
    description = (
        "Bind a model, its prompt / negative conditioning and a guidance component into one "
        "GUIDED_MODEL for a sampling node (ComfyUI's GUIDER). Fits every generation shape."
    )
    inputs = (
        Port("model", "DENOISER"),
        Port("positive", "CONDITIONING", optional=True),
        Port("negative", "CONDITIONING", optional=True),
        Port(
            "image_condition",
            "IMAGE_CONDITION",
            optional=True,
            description="a cascade's low-resolution image, attached to both conditionings",
        ),
    )
    outputs = (Port("guided", "GUIDED_MODEL"),)
    params = (
        Param("guidance", str, "cfg", "registered guidance name"),
        Param("guidance_options", dict, {}, "keyword options of the guidance factory"),
        Param("cfg_scale", float, 7.0, "guidance scale (1 = the model alone)"),
    )

    def execute(self, ctx, *, model, positive, negative, image_condition, guidance, **rest):
        if image_condition is not None:
            if positive is None:
                raise ValueError("an image condition rides on the prompt's conditioning: link one")
            positive = positive.with_image(image_condition)
            negative = None if negative is None else negative.with_image(image_condition)
        component = ctx.registry.create("guidance", guidance, **(rest["guidance_options"] or {}))
        guided = GuidedModel(
            model=model,
            guidance=component,
            positive=positive,
            negative=negative,
            scale=float(rest["cfg_scale"]),
            name=guidance,
        )
        return {"guided": guided}


class Decode(NodeType):
    """Sample -> pixels. A decode that would not fit in memory is refused first; the error's
    fix is the decoder's ``memory_fix`` when it has one (a family's own way out, such as
    decoding in tiles), else lowering the size."""

    description = "Sample -> pixels with a decoder component."
    inputs = (Port("decoder", "DECODER"), Port("samples", "LATENT"))
    outputs = (Port("image", "IMAGE"),)

    def execute(self, ctx, *, decoder, samples):
        from t2i.memory import check_fits

        x = samples.samples
        check_fits(
            f"decoding a batch of {x.shape[0]} ({'x'.join(map(str, x.shape[1:]))} samples)",
            lambda fake: decoder.decode(Latent(fake, seeds=samples.seeds)),
            (tuple(x.shape),),
            dtype=x.dtype,
            device=x.device,
            fix=getattr(decoder, "memory_fix", None)
            or "lower the size or the batch size (or run on a device with more memory)",
            key=decoder,
        )
        with torch.inference_mode():
            return {"image": decoder.decode(samples)}


class EncodeImage(NodeType):
    description = "Pixels -> sample space with a decoder's encoder (img2img)."
    inputs = (Port("decoder", "DECODER"), Port("image", "IMAGE"))
    outputs = (Port("latent", "LATENT"),)

    def execute(self, ctx, *, decoder, image):
        if not hasattr(decoder, "encode"):
            raise TypeError(f"decoder {type(decoder).__name__} has no encoder: img2img needs one")
        with torch.inference_mode():
            return {"latent": decoder.encode(Image(image.pixels.to(ctx.device)))}


class LoadImage(NodeType):
    description = "A PIL image or a file path -> IMAGE, resized to width x height (0 keeps size)."
    outputs = (Port("image", "IMAGE"),)
    params = (Param("image", object, REQUIRED), Param("width", int, 0), Param("height", int, 0))

    def execute(self, ctx, *, image, width, height):
        from PIL import Image as PILImage

        if isinstance(image, (str, os.PathLike)):
            image = PILImage.open(image)
        if width and height and image.size != (width, height):
            image = image.convert("RGB").resize((width, height), PILImage.LANCZOS)
        return {"image": Image.from_pil(image)}


def _mask_tensor(mask: Any) -> torch.Tensor:
    """An ``L`` image -> ``(1, 1, H, W)`` float in [0, 1]."""
    import numpy as np

    return torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]


def mask_image(mask: torch.Tensor) -> Any:
    """A ``(1, 1, H, W)`` mask in [0, 1] -> an ``L`` image (the inverse of ``_mask_tensor``)."""
    from PIL import Image as PILImage

    a = (mask[0, 0].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return PILImage.fromarray(a, mode="L")


class PrepareInpaint(NodeType):
    description = (
        "img2img's init image at the request size, and with a mask A1111's inpainting "
        "preparation: invert, blur, 'only masked' crop (+ padding) scaled to the request "
        "size, 'masked content: fill' -> the image to encode and the MASK (None: no mask)."
    )
    inputs = (Port("image", "IMAGE", description="the init image at its own size"),)
    outputs = (Port("image", "IMAGE"), Port("mask", "MASK"))
    params = (
        Param("mask", object, None, "an L image or a path, the init image's size; 255 = repaint"),
        Param("width", int, 0, "request width (0: the image's)"),
        Param("height", int, 0, "request height (0: the image's)"),
        Param("mask_blur", int, 4, "Gaussian blur of the mask (sigma, pixels)", minimum=0),
        Param("invert", int, 0, "1: inpaint the unmasked area", choices=(0, 1)),
        Param("only_masked", bool, False, "inpaint the masked area's box at the request size"),
        Param("padding", int, 32, "'only masked' padding, pixels", minimum=0),
        Param(
            "fill",
            (int, str),
            1,
            "masked content: 0 fill, 1 original, 2 latent noise, 3 latent nothing",
        ),
    )

    def execute(
        self, ctx, *, image, mask, width, height, mask_blur, invert, only_masked, padding, fill
    ):
        from PIL import Image as PILImage

        from t2i import masking

        pil = image.to_pil()[0]
        width, height = width or pil.width, height or pil.height
        prepared = None
        if mask is not None:
            if isinstance(mask, (str, os.PathLike)):
                mask = masking.binary_mask(PILImage.open(mask))
            prepared = masking.prepare(
                pil,
                mask,
                width,
                height,
                blur=mask_blur,
                invert=bool(invert),
                only_masked=only_masked,
                padding=padding,
                fill=masking.fill_mode(fill),
            )
        if prepared is None:
            if pil.size != (width, height):
                pil = masking.resize(pil, width, height)
            return {
                "image": Image(Image.from_pil(pil).pixels.to(image.pixels.device)),
                "mask": None,
            }
        out = Mask(
            pixels=_mask_tensor(prepared["mask"]),
            base=Image.from_pil(prepared["base"]),
            overlay=_mask_tensor(prepared["overlay"]),
            box=prepared["box"],
        )
        pixels = Image.from_pil(prepared["image"]).pixels.to(image.pixels.device)
        return {"image": Image(pixels), "mask": out}


class PasteInpaint(NodeType):
    description = (
        "Put generated images back into the init image through the MASK (A1111's overlay: "
        "scaled into the 'only masked' box, the init image kept where the mask is 0)."
    )
    inputs = (Port("image", "IMAGE"), Port("mask", "MASK", optional=True))
    outputs = (Port("image", "IMAGE"),)
    params = (Param("overlay", bool, True, "paste onto the init image (A1111's overlay_inpaint)"),)

    def execute(self, ctx, *, image, mask, overlay):
        if mask is None or not overlay:
            return {"image": image}
        from t2i import masking

        base = mask.base.to_pil()[0]
        weights = mask_image(mask.overlay)
        pasted = [masking.paste_back(p, base, weights, mask.box) for p in image.to_pil()]
        return {"image": Image(Image.from_pil(pasted).pixels.to(image.pixels.device))}


class SaveImage(NodeType):
    description = "Write each image as PNG (atomically: a temporary file renamed into place)."
    inputs = (Port("image", "IMAGE"),)
    outputs = (Port("paths", "ANY"),)
    params = (Param("prefix", str, "t2i"), Param("directory", str, "."))
    cacheable = False

    def execute(self, ctx, *, image, prefix, directory):
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, pil in enumerate(image.to_pil()):
            path = folder / f"{prefix}-{i:04d}.png"
            write_atomically(path, lambda f, pil=pil: pil.save(f, format="PNG"))
            paths.append(str(path))
        return {"paths": paths}


LATENT_UPSCALERS: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
"""A1111's latent upscalers (``modules/shared.py`` ``latent_upscale_modes``): name ->
``torch.nn.functional.interpolate`` mode and antialias."""
PIXEL_UPSCALERS = ("Lanczos", "Nearest", "Bicubic", "Bilinear")
"""Pixel upscalers without a model (PIL filters), as A1111 lists Lanczos and Nearest."""


def hires_size(width: int, height: int, scale: float, factor: int) -> tuple[int, int]:
    """A1111's hires target ``(int(width * scale), int(height * scale))``, each a multiple
    of ``factor`` (rounded down, at least one cell)."""
    if not scale >= 1.0:
        raise ValueError(f"hr_scale must be >= 1, got {scale}")
    step = max(int(factor), 1)
    return tuple(max(int(v * scale) // step * step, step) for v in (width, height))


class UpscaleLatent(NodeType):
    description = (
        "Resize a (B, C, h, w) sample to the hires size (A1111's hires fix): a latent "
        "upscaler interpolates the sample; a pixel one (Lanczos ...) decodes, resizes the "
        "pixels and encodes again. width/height are the first pass's pixels."
    )
    inputs = (Port("samples", "LATENT"), Port("decoder", "DECODER", optional=True))
    outputs = (Port("samples", "LATENT"),)
    params = (
        Param("width", int, 512),
        Param("height", int, 512),
        Param("scale", float, 2.0, minimum=1.0, maximum=8.0),
        Param("upscaler", str, "Latent", choices=(*LATENT_UPSCALERS, *PIXEL_UPSCALERS)),
    )

    def execute(self, ctx, *, samples, decoder, width, height, scale, upscaler):
        x = samples.samples
        factor = width // x.shape[-1] if decoder is None else decoder.factor
        w, h = hires_size(width, height, scale, factor)
        if upscaler in LATENT_UPSCALERS:
            mode, antialias = LATENT_UPSCALERS[upscaler]
            x = torch.nn.functional.interpolate(
                x, size=(h // factor, w // factor), mode=mode, antialias=antialias
            )
        else:
            if decoder is None or not hasattr(decoder, "encode"):
                raise ValueError(
                    f"hr_upscaler {upscaler!r} works in pixels: it needs a decoder with an encoder"
                )
            x = self._in_pixels(decoder, samples, (w, h), upscaler)
        return {"samples": Latent(x, seeds=samples.seeds, variation=samples.variation)}

    @staticmethod
    def _in_pixels(decoder, samples, size: tuple[int, int], upscaler: str) -> torch.Tensor:
        from PIL import Image as PILImage

        method = getattr(PILImage.Resampling, upscaler.upper())
        with torch.inference_mode():
            pils = [p.resize(size, method) for p in decoder.decode(samples).to_pil()]
            pixels = Image.from_pil(pils).pixels.to(samples.samples.device)
            return decoder.encode(Image(pixels)).samples


class UpscaleImage(NodeType):
    description = "Resize pixels to the hires size with a PIL filter (Lanczos: A1111's)."
    inputs = (Port("image", "IMAGE"),)
    outputs = (Port("image", "IMAGE"),)
    params = (
        Param("width", int, 512),
        Param("height", int, 512),
        Param("scale", float, 2.0, minimum=1.0, maximum=8.0),
        Param("upscaler", str, "Lanczos", choices=PIXEL_UPSCALERS),
        Param("factor", int, 8, "the size is a multiple of this (the decoder's factor)"),
    )

    def execute(self, ctx, *, image, width, height, scale, upscaler, factor):
        from PIL import Image as PILImage

        w, h = hires_size(width, height, scale, factor)
        method = getattr(PILImage.Resampling, upscaler.upper())
        pils = [p.resize((w, h), method) for p in image.to_pil()]
        return {"image": Image(Image.from_pil(pils).pixels.to(image.pixels.device))}
