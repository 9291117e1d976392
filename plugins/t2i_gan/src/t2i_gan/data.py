"""Training data of ``t2i train gan``: shapes-benchmark renders and their sentence vectors.

Item ``i`` is :func:`t2i.shapes.dataset.make_sample` ``("train", i, size, seed=0,
pair_fraction)``: its image (uint8, rendered in parallel) and caption. Captions are encoded
once by the frozen MiniLM (:mod:`t2i_gan.text`), or read from a folder of precomputed
vectors (``chunk*.pt`` files ``{"start", "captions", "emb"}``, items ``start ..``), so a
machine without MiniLM can still train; the captions are checked against the renders.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
import torch

log = structlog.get_logger("t2i_gan.data")


def render_items(
    n: int, size: int = 64, *, pair_fraction: float = 0.5, workers: int | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Items ``0 .. n-1`` -> uint8 images ``(n, 3, size, size)`` and their captions."""
    from t2i.shapes.dataset import render_items as render

    return render(n, size, pair_fraction=pair_fraction, workers=workers)


def load_vectors(folder: str | os.PathLike) -> tuple[torch.Tensor, list[str]]:
    """Precomputed sentence vectors of items ``0 .. n-1`` (``chunk*.pt``, contiguous)."""
    files = sorted(Path(folder).glob("chunk*.pt"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no chunk*.pt files of sentence vectors")
    chunks = sorted((torch.load(f, weights_only=True) for f in files), key=lambda c: c["start"])
    vectors, captions = [], []
    for c in chunks:
        if c["start"] != len(captions):
            raise ValueError(f"{folder}: chunks are not contiguous at item {len(captions)}")
        vectors.append(c["emb"].float())
        captions += list(c["captions"])
    return torch.cat(vectors), captions


@torch.no_grad()
def encode_captions(
    captions: list[str], *, device: torch.device | str = "cpu", batch: int = 512
) -> torch.Tensor:
    """MiniLM sentence vectors ``(n, 384)`` of ``captions`` (float32, on ``device``)."""
    from t2i_gan.text import SentenceEncoder, SentenceTokenizer

    tokenizer, encoder = SentenceTokenizer(), SentenceEncoder().to(device)
    out = [
        encoder(tokenizer(captions[i : i + batch])).pooled for i in range(0, len(captions), batch)
    ]
    return torch.cat(out)


def training_set(
    n: int, size: int, *, pair_fraction: float, vectors: str | os.PathLike | None, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``(n, 3, S, S)`` and float sentence vectors ``(n, 384)`` on ``device``."""
    images, captions = render_items(n, size, pair_fraction=pair_fraction)
    if vectors is None:
        emb = encode_captions(captions, device=device)
    else:
        emb, stored = load_vectors(vectors)
        if len(stored) < n:
            raise ValueError(f"{vectors} holds {len(stored)} vectors, fewer than --images {n}")
        bad = [i for i in range(0, n, max(1, n // 64)) if stored[i] != captions[i]]
        if bad:
            raise ValueError(
                f"{vectors}: captions differ from the renders at items {bad[:4]}: the vectors "
                "were made with another --pair-fraction"
            )
        emb = emb[:n]
    log.info("gan.data", images=n, size=size, pair_fraction=pair_fraction)
    return images.to(device), emb.to(device)
