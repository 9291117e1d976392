"""Training data of ``t2i train dalle``: shapes-benchmark renders and their captions.

Item ``i`` is :func:`t2i.shapes.dataset.make_sample` ``("train", i, size, seed=0,
pair_fraction)``, rendered in ``workers`` processes (the device run allows 6).
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch


def _render_range(args: tuple[int, int, int, float]) -> tuple[np.ndarray, list[str]]:
    from t2i.shapes.dataset import make_sample

    start, stop, size, pair_fraction = args
    images, captions = [], []
    for i in range(start, stop):
        s = make_sample("train", i, size, 0, pair_fraction=pair_fraction)
        images.append(np.asarray(s.image.convert("RGB"), dtype=np.uint8))
        captions.append(s.caption.text)
    return np.stack(images), captions


def render_items(
    n: int, size: int = 64, *, pair_fraction: float = 0.5, workers: int = 1
) -> tuple[torch.Tensor, list[str]]:
    """Items ``0 .. n-1`` -> uint8 images ``(n, 3, size, size)`` and their captions."""
    chunk = max(1, math.ceil(n / (workers * 4)))
    jobs = [(a, min(n, a + chunk), size, pair_fraction) for a in range(0, n, chunk)]
    if workers <= 1:
        results = list(map(_render_range, jobs))
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_render_range, jobs))
    images = np.concatenate([r[0] for r in results]).transpose(0, 3, 1, 2)
    captions = [c for r in results for c in r[1]]
    return torch.from_numpy(np.ascontiguousarray(images)), captions


@torch.no_grad()
def encode_tokens(encoder, images: torch.Tensor, *, batch: int = 512) -> torch.Tensor:
    """uint8 images -> ``(n, h * w)`` int64 argmax dVAE tokens (on the encoder's device)."""
    device = next(encoder.parameters()).device
    out = []
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch].to(device).float() / 255.0
        out.append(encoder.tokens(x).flatten(1))
    return torch.cat(out)
