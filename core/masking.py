"""Inpainting masks as AUTOMATIC1111's web UI processes them (``modules/processing.py``
``StableDiffusionProcessingImg2Img.init``, ``modules/masking.py``, ``apply_overlay``).

The pixel half of inpainting, family-agnostic (PIL images and numpy, no model):

- :func:`binary_mask`: a mask image -> ``L`` (an RGBA mask's alpha, thresholded at 128);
- :func:`blur_mask`: a Gaussian blur of ``radius`` (sigma) with a ``2 * int(2.5 r + 0.5) + 1``
  kernel, horizontal then vertical, 8-bit after each pass (A1111's ``cv2.GaussianBlur``,
  reflect-101 borders);
- :func:`crop_region` / :func:`expand_crop_region`: "only masked" - the masked pixels' box
  plus padding, grown to the request's aspect ratio inside the image;
- :func:`resize_and_fill` / :func:`crop_and_resize`: A1111's resize modes 2 and 1 (Lanczos);
- :func:`fill_masked`: "masked content: fill" - the masked area painted with ever finer blurs
  of the rest of the image;
- :func:`latent_mask`: the mask at the sample's size (bicubic, rounded to 0 / 1);
- :func:`paste_back`: the generated image pasted into the init image through the mask.

Masks are 8-bit ``L`` images: 255 = repaint, 0 = keep.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Box = tuple[int, int, int, int]
"""``(x1, y1, x2, y2)``: left, top, right, bottom (exclusive) in pixels."""

FILL_MODES = ("fill", "original", "latent noise", "latent nothing")
"""A1111's "Masked content" choices; ``inpainting_fill`` is the index into this tuple."""


def fill_mode(value: Any) -> int:
    """``inpainting_fill`` as A1111's index 0-3, from the index or the name (any case)."""
    if isinstance(value, bool):
        raise ValueError(f"inpainting_fill must be 0-3 or one of {', '.join(FILL_MODES)}")
    if isinstance(value, int) and 0 <= value < len(FILL_MODES):
        return value
    if isinstance(value, str) and value.strip().lower() in FILL_MODES:
        return FILL_MODES.index(value.strip().lower())
    raise ValueError(
        f"inpainting_fill must be 0-3 or one of {', '.join(FILL_MODES)}, got {value!r}"
    )


def binary_mask(image: Any) -> Any:
    """A mask image as ``L``: an RGBA image whose alpha is not all opaque gives its alpha,
    thresholded (> 128 -> 255, else 0), as a painted web-UI mask; anything else its grey."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        return image.split()[-1].point(lambda v: 255 if v > 128 else 0)
    return image.convert("L")


def _gaussian_kernel(radius: float) -> tuple[np.ndarray, int]:
    size = 2 * int(2.5 * radius + 0.5) + 1
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x**2) / (2.0 * radius * radius))
    return k / k.sum(), size // 2


def _blur_axis(a: np.ndarray, radius: float, axis: int) -> np.ndarray:
    kernel, half = _gaussian_kernel(radius)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half, half)
    padded = np.pad(a.astype(np.float64), pad, mode="reflect")  # cv2's BORDER_REFLECT_101
    out = np.zeros(a.shape, dtype=np.float64)
    n = a.shape[axis]
    for i, w in enumerate(kernel):
        out += w * (padded[i : i + n] if axis == 0 else padded[:, i : i + n])
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def blur_mask(mask: Any, radius: float) -> Any:
    """``mask`` (``L``) blurred by a Gaussian of sigma ``radius`` (0: unchanged)."""
    from PIL import Image as PILImage

    if radius <= 0:
        return mask
    a = np.asarray(mask, dtype=np.uint8)
    a = _blur_axis(a, radius, axis=1)  # (kernel, 1): along x first
    a = _blur_axis(a, radius, axis=0)
    return PILImage.fromarray(a, mode="L")


def crop_region(mask: Any, padding: int = 0) -> Box | None:
    """The box of ``mask``'s non-zero pixels grown by ``padding`` on each side (inside the
    image), or None for a blank mask (A1111's ``get_crop_region_v2``)."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    w, h = mask.size
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, w), min(y2 + padding, h)


def _grow(lo: int, hi: int, extra: int, limit: int) -> tuple[int, int]:
    """``[lo, hi)`` grown by ``extra`` (half each side), shifted back inside ``[0, limit]``."""
    lo -= extra // 2
    hi += extra - extra // 2
    if hi >= limit:
        lo -= hi - limit
        hi = limit
    if lo < 0:
        hi -= lo
        lo = 0
    return lo, min(hi, limit)


def expand_crop_region(box: Box, width: int, height: int, image_w: int, image_h: int) -> Box:
    """``box`` grown along one axis to the ``width : height`` aspect ratio of the request
    (A1111's ``expand_crop_region``: a 128x32 region for a 512x512 request becomes 128x128)."""
    x1, y1, x2, y2 = box
    if (x2 - x1) / (y2 - y1) > width / height:
        extra = int((x2 - x1) / (width / height) - (y2 - y1))
        y1, y2 = _grow(y1, y2, extra, image_h)
    else:
        extra = int((y2 - y1) * (width / height) - (x2 - x1))
        x1, x2 = _grow(x1, x2, extra, image_w)
    return x1, y1, x2, y2


def resize(image: Any, width: int, height: int) -> Any:
    """A Lanczos resize (A1111's "Just resize"); the same size is a copy."""
    from PIL import Image as PILImage

    return image.resize((width, height), resample=PILImage.LANCZOS)


def resize_and_fill(image: Any, width: int, height: int) -> Any:
    """A1111's resize mode 2: fit inside ``width x height`` keeping the aspect ratio, centred,
    the gaps filled by stretching the edge rows / columns."""
    from PIL import Image as PILImage

    ratio, src_ratio = width / height, image.width / image.height
    src_w = width if ratio < src_ratio else image.width * height // image.height
    src_h = height if ratio >= src_ratio else image.height * width // image.width
    fitted = resize(image, src_w, src_h)
    out = PILImage.new(image.mode, (width, height))
    out.paste(fitted, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        gap = height // 2 - src_h // 2
        if gap > 0:
            top = fitted.resize((width, gap), box=(0, 0, width, 0))
            bottom = fitted.resize((width, gap), box=(0, fitted.height, width, fitted.height))
            out.paste(top, box=(0, 0))
            out.paste(bottom, box=(0, gap + src_h))
    elif ratio > src_ratio:
        gap = width // 2 - src_w // 2
        if gap > 0:
            left = fitted.resize((gap, height), box=(0, 0, 0, height))
            right = fitted.resize((gap, height), box=(fitted.width, 0, fitted.width, height))
            out.paste(left, box=(0, 0))
            out.paste(right, box=(gap + src_w, 0))
    return out


def crop_and_resize(image: Any, width: int, height: int) -> Any:
    """A1111's resize mode 1: cover ``width x height`` keeping the aspect ratio, centred,
    the overhang cut off."""
    from PIL import Image as PILImage

    ratio, src_ratio = width / height, image.width / image.height
    src_w = width if ratio > src_ratio else image.width * height // image.height
    src_h = height if ratio <= src_ratio else image.height * width // image.width
    out = PILImage.new(image.mode, (width, height))
    out.paste(resize(image, src_w, src_h), box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    return out


def fill_masked(image: Any, mask: Any) -> Any:
    """ "Masked content: fill": the masked area of ``image`` (RGB) painted with the colours
    around it - the unmasked pixels, blurred at radii 256, 64, 16, 4, 2 and 0, composited
    over each other (A1111's ``masking.fill``; the unmasked area keeps its pixels)."""
    from PIL import Image as PILImage
    from PIL import ImageFilter, ImageOps

    out = PILImage.new("RGBA", image.size)
    kept = PILImage.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(blurred)
    return out.convert("RGB")


def latent_mask(mask: Any, width: int, height: int) -> np.ndarray:
    """``(height, width)`` float32 of 0 / 1: ``mask`` resized to the sample's cells (PIL's
    bicubic) and rounded, where 1 = resample, 0 = keep the init sample."""
    from PIL import Image as PILImage

    small = mask.convert("L").resize((width, height), resample=PILImage.BICUBIC)
    return np.around(np.asarray(small, dtype=np.float32) / 255.0)


def overlay_mask(mask: Any) -> Any:
    """The paste-back weights of a whole-picture inpaint: the request-size mask doubled and
    clipped (a pixel half masked or more takes the generated image whole)."""
    from PIL import Image as PILImage

    a = np.clip(np.asarray(mask, dtype=np.float32) * 2, 0, 255).astype(np.uint8)
    return PILImage.fromarray(a, mode="L")


def paste_back(generated: Any, base: Any, overlay: Any, box: Box | None) -> Any:
    """``generated`` (RGB) put into ``base`` (RGB): scaled into ``box`` (crop and resize)
    when given, then ``base`` composited over it with alpha ``255 - overlay``, so a pixel
    keeps ``base`` where ``overlay`` is 0 and takes ``generated`` where it is 255
    (A1111's ``apply_overlay``)."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    if box is not None:
        x1, y1, x2, y2 = box
        canvas = PILImage.new("RGBA", base.size)
        canvas.paste(crop_and_resize(generated, x2 - x1, y2 - y1), (x1, y1))
        generated = canvas
    keep = PILImage.new("RGBa", base.size)
    keep.paste(base.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(overlay.convert("L")))
    out = generated.convert("RGBA")
    out.alpha_composite(keep.convert("RGBA"))
    return out.convert("RGB")


def prepare(
    image: Any,
    mask: Any,
    width: int,
    height: int,
    *,
    blur: float = 4,
    invert: bool = False,
    only_masked: bool = False,
    padding: int = 32,
    fill: int = 1,
) -> dict[str, Any] | None:
    """The pixel work A1111 does before sampling an inpaint, or None when there is nothing
    to inpaint ("only masked" with a blank mask: A1111 then runs plain img2img).

    Args:
        image: the init image (RGB, its own size).
        mask: the mask (``L``, the init image's size), 255 = repaint.
        width, height: the request's size (for "only masked": the crop's working size).
        blur: "Mask blur" (Gaussian sigma in pixels).
        invert: "Inpaint not masked".
        only_masked: "Inpaint area: Only masked" (``inpaint_full_res``).
        padding: "Only masked padding, pixels".
        fill: "Masked content" index (:data:`FILL_MODES`); all but "original" fill the
            masked area of the image before it is encoded.

    Returns:
        ``image`` (RGB, ``width x height``: what is encoded), ``mask`` (``L``, the same
        size), ``base`` (RGB: the image the result is pasted into), ``overlay`` (``L``, the
        base's size: the paste-back weights) and ``box`` (the crop in ``base``, or None).
    """
    from PIL import ImageOps

    if mask.size != image.size:
        raise ValueError(
            f"the mask is {mask.size[0]}x{mask.size[1]} but the init image is "
            f"{image.size[0]}x{image.size[1]}; give a mask of the init image's size"
        )
    mask = mask.convert("L")
    if invert:
        mask = ImageOps.invert(mask)
    mask = blur_mask(mask, blur)
    box = None
    if only_masked:
        box = crop_region(mask, padding)
        if box is None:
            return None
        box = expand_crop_region(box, width, height, *mask.size)
        base, overlay = image, mask
        mask = resize_and_fill(mask.crop(box), width, height).convert("L")
        image = resize_and_fill(image.crop(box), width, height)
    else:
        image = resize(image, width, height)
        mask = resize(mask, width, height)
        base, overlay = image, overlay_mask(mask)
    if fill != FILL_MODES.index("original"):
        image = fill_masked(image, mask)
    return {"image": image, "mask": mask, "base": base, "overlay": overlay, "box": box}
