"""The core's node types: load components, tokenize, encode, sample, decode, images.

They know no model family: every model-specific decision lives in the components
they load by registered name. Three generation shapes share them:

- iterative denoising: ``EmptyLatent -> Sample(sampler="euler") -> Decode``
- autoregressive tokens: ``EmptyLatent(token grid) -> Sample(sampler="top_k") -> Decode``
- single pass: ``EmptyLatent(z) -> Sample(sampler="single_pass") -> Decode``
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from t2i.contracts import SampleJob
from t2i.files import write_atomically
from t2i.graph.node import REQUIRED, ExecutionContext, NodeType, Param, Port
from t2i.payloads import Image, Latent


def _place(component: Any, ctx: ExecutionContext) -> Any:
    """Move a component to the run's device/dtype when it can move (``.to``)."""
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


def _loader(kind: str, socket: str, output: str) -> type[NodeType]:
    class Load(NodeType):
        description = f"Instantiate a registered {kind} by name (factory options in `options`)."
        outputs = (Port(output, socket),)
        params = (
            Param("name", str, REQUIRED, f"registered {kind} name"),
            Param("options", dict, {}, "keyword options for the factory (checkpoint path ...)"),
        )

        def execute(self, ctx: ExecutionContext, *, name: str, options: dict) -> dict[str, Any]:
            component = ctx.registry.create(kind, name, **(options or {}))
            return {output: _place(component, ctx)}

    Load.__name__ = Load.__qualname__ = f"Load{socket.title().replace('_', '')}"
    return Load


LoadTokenizer = _loader("tokenizer", "TOKENIZER", "tokenizer")
LoadTextEncoder = _loader("text_encoder", "TEXT_ENCODER", "text_encoder")
LoadDenoiser = _loader("denoiser", "DENOISER", "model")
LoadDecoder = _loader("decoder", "DECODER", "decoder")


class Tokenize(NodeType):
    description = "Text -> token ids (+ emphasis weights) with a tokenizer component."
    inputs = (Port("tokenizer", "TOKENIZER"),)
    outputs = (Port("tokens", "TOKENS"),)
    params = (Param("text", (str, list), "", "a prompt, or a list of prompts (one per row)"),)

    def execute(self, ctx, *, tokenizer, text):
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


class EmptyLatent(NodeType):
    description = (
        "The shape and seeds of a batch to sample: (B, C, H/f, W/f), or (B, C) when factor is 0. "
        "With a decoder linked, C and f come from it."
    )
    inputs = (Port("decoder", "DECODER", optional=True),)
    outputs = (Port("latent", "LATENT"),)
    params = (
        Param("width", int, 512),
        Param("height", int, 512),
        Param("batch_size", int, 1),
        Param("seed", int, 0, "seed of the first row; row i uses seed + i"),
        Param("channels", int, 4),
        Param("factor", int, 8),
    )

    def execute(self, ctx, *, decoder, width, height, batch_size, seed, channels, factor):
        if decoder is not None:
            channels, factor = decoder.channels, decoder.factor
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
        seeds = tuple(seed + i for i in range(batch_size))
        return {"latent": Latent(torch.zeros(shape), seeds=seeds)}


class Sample(NodeType):
    description = "Run a sampler: noise (from the latent's seeds) -> sample, calling the model."
    inputs = (
        Port("model", "DENOISER"),
        Port("positive", "CONDITIONING", optional=True),
        Port("negative", "CONDITIONING", optional=True),
        Port("latent", "LATENT", description="shape and seeds of the batch"),
        Port("init", "LATENT", optional=True, description="img2img start sample"),
    )
    outputs = (Port("samples", "LATENT"),)
    params = (
        Param(
            "sampler",
            str,
            "euler",
            "sampler name; a web-UI name such as 'DPM++ 2M Karras' also picks the schedule",
        ),
        Param("schedule", (str, type(None)), None, "schedule name, None for the sampler's default"),
        Param("steps", int, 20),
        Param("cfg_scale", float, 7.0),
        Param("guidance", str, "cfg"),
        Param("guidance_options", dict, {}),
        Param("strength", float, 1.0, "img2img denoising strength"),
        Param("eta", (float, type(None)), None),
        Param("top_k", (int, type(None)), None),
        Param("top_p", (float, type(None)), None),
        Param("temperature", float, 1.0),
        Param("noise_device", str, "cpu", choices=("cpu", "device")),
    )

    def execute(
        self,
        ctx,
        *,
        model,
        positive,
        negative,
        latent,
        init,
        sampler,
        schedule,
        steps,
        cfg_scale,
        guidance,
        guidance_options,
        strength,
        eta,
        top_k,
        top_p,
        temperature,
        noise_device,
    ):
        sampler_name, schedule_from_name = resolve_sampler(ctx.registry, sampler)
        sampler_obj = ctx.registry.create("sampler", sampler_name)
        guidance_obj = ctx.registry.create("guidance", guidance, **(guidance_options or {}))
        batch = latent.samples.shape[0]
        dtype = ctx.dtype or torch.float32
        place = lambda c: None if c is None else c.repeat_to(batch).to(ctx.device, dtype)  # noqa: E731
        job = SampleJob(
            model=model,
            positive=place(positive),
            negative=place(negative),
            shape=tuple(latent.samples.shape),
            seeds=latent.seeds,
            steps=steps,
            cfg_scale=cfg_scale,
            guidance=guidance_obj,
            schedule=schedule or schedule_from_name,
            init=init,
            strength=strength,
            eta=eta,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            device=ctx.device,
            dtype=dtype,
            noise_device=noise_device,
            callback=ctx.step,
            registry=ctx.registry,
        )
        with torch.inference_mode():
            out = sampler_obj.sample(job)
        return {"samples": out}


def resolve_sampler(registry: Any, name: str) -> tuple[str, str | None]:
    """Split a web-UI name such as ``"DPM++ 2M Karras"`` into (sampler, schedule)."""
    try:
        from t2i.diffusion.sampling import resolve_sampler_name
    except ImportError:  # pragma: no cover - sampling toolbox missing
        return name, None
    return resolve_sampler_name(name, registry)


class Decode(NodeType):
    description = "Sample -> pixels with a decoder component."
    inputs = (Port("decoder", "DECODER"), Port("samples", "LATENT"))
    outputs = (Port("image", "IMAGE"),)

    def execute(self, ctx, *, decoder, samples):
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


CORE_NODES: dict[str, type[NodeType]] = {
    "LoadTokenizer": LoadTokenizer,
    "LoadTextEncoder": LoadTextEncoder,
    "LoadDenoiser": LoadDenoiser,
    "LoadDecoder": LoadDecoder,
    "Tokenize": Tokenize,
    "EncodeText": EncodeText,
    "EmptyLatent": EmptyLatent,
    "Sample": Sample,
    "Decode": Decode,
    "EncodeImage": EncodeImage,
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
}


def register_core_nodes(register) -> None:
    """Register the core node types (called from the core's built-in plugin)."""
    for name, cls in CORE_NODES.items():
        cls.type_name = name
        register(name, cls, description=cls.description)
