"""Training data of ``t2i train dalle``: shapes-benchmark renders and their captions.

Item ``i`` is :func:`t2i.shapes.dataset.make_sample` ``("train", i, size, seed=0,
pair_fraction)``, rendered in ``workers`` processes (the device run allows 6).
"""

from __future__ import annotations

import torch


def render_items(
    n: int, size: int = 64, *, pair_fraction: float = 0.5, workers: int = 1
) -> tuple[torch.Tensor, list[str]]:
    """Items ``0 .. n-1`` -> uint8 images ``(n, 3, size, size)`` and their captions."""
    from t2i.shapes.dataset import render_items as render

    return render(n, size, pair_fraction=pair_fraction, workers=workers)


@torch.no_grad()
def encode_tokens(encoder, images: torch.Tensor, *, batch: int = 512) -> torch.Tensor:
    """uint8 images -> ``(n, h * w)`` int64 argmax dVAE tokens (on the encoder's device)."""
    device = next(encoder.parameters()).device
    out = []
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch].to(device).float() / 255.0
        out.append(encoder.tokens(x).flatten(1))
    return torch.cat(out)
