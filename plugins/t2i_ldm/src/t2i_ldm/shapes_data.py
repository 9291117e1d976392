"""Training data for ``t2i train ldm``: shapes-benchmark renders or a ``t2i data shapes`` folder.

Both give uint8 images ``(N, 3, H, W)`` and their captions, held in memory (and on the GPU) by
the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import torch


def render_shapes(
    n: int,
    size: int,
    *,
    split: str = "train",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    pair_fraction: float = 0.5,
) -> tuple[torch.Tensor, list[str]]:
    """Render ``n`` benchmark items in parallel -> uint8 ``(n, 3, size, size)`` and captions
    (:func:`t2i.shapes.dataset.render_items`).

    ``pair_fraction`` of the scenes hold two objects (the benchmark's own split is 0.5).
    """
    from t2i.shapes.dataset import render_items

    return render_items(
        n, size, split=split, seed=seed, pair_fraction=pair_fraction, workers=workers,
        progress=progress,
    )  # fmt: skip


def load_folder(folder: Path) -> tuple[torch.Tensor, list[str]]:
    """A folder written by ``t2i data shapes`` (PNGs + captions.jsonl)."""
    from PIL import Image

    index = folder / "captions.jsonl"
    if not index.is_file():
        raise click.UsageError(f"{folder} has no captions.jsonl: write one with `t2i data shapes`")
    images, captions = [], []
    for line in index.read_text().splitlines():
        item = json.loads(line)
        images.append(np.asarray(Image.open(folder / item["file"]).convert("RGB"), np.uint8))
        captions.append(item["caption"])
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy()), captions


def tqdm_options(progress: bool) -> dict[str, bool]:
    """tqdm keywords: silence a bar, or leave tqdm's default (which honours ``TQDM_DISABLE``)."""
    return {} if progress else {"disable": True}
