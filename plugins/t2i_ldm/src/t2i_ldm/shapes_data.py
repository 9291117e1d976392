"""Training data for ``t2i train ldm``: shapes-benchmark renders or a ``t2i data shapes`` folder.

Both give uint8 images ``(N, 3, H, W)`` and their captions, held in memory (and on the GPU) by
the trainer.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm


def _render_range(
    args: tuple[str, int, int, int, int, float],
) -> tuple[np.ndarray, list[str]]:
    from t2i.shapes.dataset import make_sample

    split, start, stop, size, seed, pair_fraction = args
    images, captions = [], []
    for i in range(start, stop):
        s = make_sample(split, i, size, seed, pair_fraction=pair_fraction)
        images.append(np.asarray(s.image.convert("RGB"), dtype=np.uint8))
        captions.append(s.caption.text)
    return np.stack(images), captions


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
    """Render ``n`` benchmark items in parallel -> uint8 ``(n, 3, size, size)`` and captions.

    ``pair_fraction`` of the scenes hold two objects (the benchmark's own split is 0.5).
    """
    workers = workers or max(1, min(16, (os.cpu_count() or 1)))
    chunk = max(1, math.ceil(n / (workers * 4)))
    jobs = [(split, a, min(n, a + chunk), size, seed, pair_fraction) for a in range(0, n, chunk)]
    images, captions = [], []
    if workers == 1:
        results = map(_render_range, jobs)
    else:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_render_range, jobs)
    for imgs, caps in tqdm(
        results, total=len(jobs), desc="render", unit="chunk", **tqdm_options(progress)
    ):
        images.append(imgs)
        captions.extend(caps)
    if workers != 1:
        pool.shutdown()
    array = np.concatenate(images).transpose(0, 3, 1, 2)  # (n, 3, H, W)
    return torch.from_numpy(np.ascontiguousarray(array)), captions


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
