"""Images over HTTP: base64 in and out, PNG bytes carrying the infotext, live previews."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from PIL import Image

from t2i.outputs import encode_image, read_infotext
from t2i.request import RequestError, decode_init_image

MAX_PIXELS = 8192 * 8192
"""Largest image decoded from a request (Pillow's bomb check is the second line)."""


def png_bytes(image: Image.Image, infotext: str | None) -> bytes:
    """``image`` as PNG with ``infotext`` in its ``parameters`` text chunk (A1111's)."""
    return encode_image(image, "PNG", infotext)


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_base64(field: str, text: Any) -> bytes:
    """Base64 text (a ``data:image/...;base64,`` prefix allowed) as bytes.

    Raises:
        RequestError: ``field`` is not a string or not base64.
    """
    if not isinstance(text, str):
        raise RequestError(field, f"must be a base64 string, got {type(text).__name__}")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(field, "is not valid base64 (A-Z a-z 0-9 + / =)") from None


def decode_image(field: str, text: Any) -> Image.Image:
    """A base64 image as a decoded RGB image.

    Raises:
        RequestError: ``field`` is not base64, not an image, or too large.
    """
    data = decode_base64(field, text)
    if not data:
        raise RequestError(field, "is empty: give a base64 PNG, JPEG or WebP")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise RequestError(
            field, f"is not an image ({type(exc).__name__}); give a base64 PNG, JPEG or WebP"
        ) from None
    if width * height > MAX_PIXELS:
        raise RequestError(field, f"is {width}x{height}; the limit is {MAX_PIXELS} pixels")
    try:
        return decode_init_image(Image.open(io.BytesIO(data)))
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        if isinstance(exc, RequestError):
            raise RequestError(field, str(exc).partition(": ")[2]) from None
        raise RequestError(field, f"cannot be decoded ({type(exc).__name__}: {exc})") from None
    except RequestError as exc:
        raise RequestError(field, str(exc).partition(": ")[2]) from None


def infotext_of(data: bytes) -> str | None:
    """The infotext inside image bytes (PNG text chunk or EXIF), or None."""
    try:
        return read_infotext(io.BytesIO(data))
    except (OSError, ValueError, SyntaxError, EOFError):
        raise RequestError("image", "is not an image; give a base64 PNG, JPEG or WebP") from None


def job_preview(job: Any) -> Image.Image | None:
    """A running job's live preview at the request's size: its decoded preview when the
    worker made one for the latest steps, else the cheap view of the sampler's ``x0`` (none
    for a token grid before its first decoded preview)."""
    size = (job.fields.get("width"), job.fields.get("height"))
    size = size if all(isinstance(v, int) for v in size) else None
    if job.preview_image is not None:
        image = job.preview_image
        return image.resize(size, Image.NEAREST) if size and image.size != size else image
    if job.preview is None or not job.preview.is_floating_point():
        return None  # token ids are no picture: only their decoded preview is shown
    return latent_preview(job.preview, size)


def latent_preview(x0: Any, size: tuple[int, int] | None = None) -> Image.Image:
    """A cheap preview of a sampler's ``x0`` prediction (first image of the batch).

    Pixel-space samples (3 channels) are shown as they are; a latent's first three
    channels are stretched to the full range each (the web UI's "Approx cheap" idea, with
    no per-model matrix), one channel as grey. Scaled (nearest) to ``size``.
    """
    import torch

    x = x0[0].detach().float().cpu()  # (C, H, W)
    if x.shape[0] >= 3:
        x = x[:3]
    else:
        x = x[:1].expand(3, -1, -1)
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    x = (x - lo) / torch.clamp(hi - lo, min=1e-6)
    array = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(array, "RGB")
    if size and image.size != size:
        image = image.resize(size, Image.NEAREST)
    return image
