"""Generation results: PIL images plus complete metadata; PNGs carry the A1111 infotext."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from t2i.infotext import format_infotext
from t2i.outputs import save_images


@attrs.frozen(eq=False)
class GenerationResult:
    """What a pipeline call returns.

    Attributes:
        images: one ``PIL.Image.Image`` per generated image.
        seeds: the seed of each image.
        prompts: the prompt of each image.
        infotexts: the A1111 infotext of each image.
        metadata: every request parameter, component names, plugin versions, timings.
    """

    images: list[Any]
    seeds: list[int]
    prompts: list[str]
    infotexts: list[str]
    metadata: dict[str, Any]

    def save(self, path: str | Path, *, overwrite: bool = False) -> list[Path]:
        """Write the images with their infotext (:func:`t2i.outputs.save_images`).

        ``path`` with an image extension (``.png``, ``.jpg``, ``.webp``) names the file
        (``name-0000.png`` ... when there are several); otherwise it is a folder, created if
        needed, whose numbering continues. Existing files are never replaced unless
        ``overwrite`` is set.
        """
        return save_images(self.images, self.infotexts, self.seeds, path, overwrite=overwrite)


FILL_LABELS = ("fill", "original", "latent noise", "latent nothing")


def inpaint_infotext(request: Any) -> dict[str, Any]:
    """The keys A1111 writes for an inpaint (``Mask blur`` when blurred, ``Mask mode`` when
    inverted, ``Masked content`` unless "original", ``Inpaint area`` / ``Masked area padding``
    for "only masked"); none without a mask."""
    if getattr(request, "mask", None) is None:
        return {}
    mask = request.mask
    if request.inpainting_mask_invert:
        from PIL import ImageOps

        mask = ImageOps.invert(mask.convert("L"))
    only = request.inpaint_full_res and mask.getbbox() is not None  # blank: plain img2img
    return {
        "Mask blur": request.mask_blur or None,
        "Mask mode": "Inpaint not masked" if request.inpainting_mask_invert else None,
        "Masked content": None
        if request.inpainting_fill == 1
        else FILL_LABELS[request.inpainting_fill],
        "Inpaint area": "Only masked" if only else None,
        "Masked area padding": request.inpaint_full_res_padding if only else None,
    }


AFTER_MODEL = ("VAE hash", "VAE")
"""Recipe infotext keys that A1111 writes right after ``Model`` (a VAE chosen by the user)."""


def infotext_for(
    request: Any,
    seed: int,
    prompt: str,
    *,
    sampler_label: str,
    schedule_label: str | None,
    model_name: str,
    version: str,
    extras: Mapping[str, Any] | None = None,
    model_hash: str = "",
    subseed: int | None = None,
) -> str:
    """The infotext of one image, keys in A1111 v1.10 order; ``extras`` (from the recipe,
    such as ``Clip skip``) go before ``RNG``, except :data:`AFTER_MODEL`'s, which go where
    A1111 writes them, after ``Model``. ``subseed`` is the image's variation seed,
    written (with its strength) when the request's ``subseed_strength`` is above 0."""
    strength = getattr(request, "subseed_strength", 0.0)
    resize = getattr(request, "seed_resize_from", None)
    extras = dict(extras or {})
    after_model = {key: extras.pop(key, None) for key in AFTER_MODEL}
    params = {
        "Steps": request.steps,
        "Sampler": sampler_label,
        "Schedule type": schedule_label,
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model_hash or None,
        "Model": model_name or None,
        **after_model,
        "Variation seed": subseed if strength > 0 else None,
        "Variation seed strength": strength if strength > 0 else None,
        "Seed resize from": f"{resize[0]}x{resize[1]}" if resize is not None else None,
        "Denoising strength": request.strength if request.init_image is not None else None,
        **inpaint_infotext(request),
        **extras,
        "RNG": "CPU" if request.noise_device == "cpu" else "GPU",
        "Guidance": request.guidance if request.guidance != "cfg" else None,
        "Version": f"t2i {version}",
    }
    return format_infotext(prompt, request.negative_prompt, params)
