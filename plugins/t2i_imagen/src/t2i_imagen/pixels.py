"""The pixel-space "decoder" of the Imagen family: samples in [-1, 1] <-> images in [0, 1]."""

from __future__ import annotations

import torch.nn.functional as F

from t2i.payloads import Image, Latent


class PixelDecoder:
    """``decode``: ``(x + 1) / 2`` clamped; ``encode`` (img2img): ``2 p - 1``, area-downsampled
    by ``factor`` (the base stage of a cascade samples at ``1 / factor`` of the size)."""

    channels = 3

    def __init__(self, factor: int = 1) -> None:
        if not (isinstance(factor, int) and factor >= 1):
            raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
        self.factor = factor

    def decode(self, latent: Latent) -> Image:
        return Image(((latent.samples.float() + 1) / 2).clamp(0, 1))

    def encode(self, image: Image) -> Latent:
        x = image.pixels * 2 - 1
        return Latent(F.avg_pool2d(x, self.factor) if self.factor > 1 else x)
