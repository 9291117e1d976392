"""Torch dataset of the shapes benchmark, and export to a folder of PNGs + ``captions.jsonl``.

Item ``i`` of ``ShapesDataset(split, size, length, seed)`` is a pure function of
``(split, seed, i, size)``: one seed (:func:`t2i.shapes.splits.scene_seed`) draws the scene,
its caption, and the renderer's jitter. Each item is ``(image, caption, record)``:

* ``image``: float32 tensor ``(3, size, size)`` in [0, 1];
* ``caption``: the caption text;
* ``record``: dict with the *stated* attributes (``kind``, ``objects``, ``relation``,
  ``background``; None where the caption is silent) plus ``scene`` (the complete ground truth),
  ``heldout`` (a test-only combination) and ``seed``.

Records hold ``None`` values, which torch's default collate refuses: use
:func:`collate_shapes` as the DataLoader's ``collate_fn``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import structlog
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from t2i.shapes.captions import Caption, make_caption
from t2i.shapes.render import render
from t2i.shapes.scene import Scene
from t2i.shapes.splits import check_split, is_heldout, sample_scene, scene_seed

log = structlog.get_logger(__name__)

CAPTIONS_FILE = "captions.jsonl"


@attrs.frozen
class ShapesSample:
    """One item of the benchmark before tensor conversion."""

    index: int
    seed: int
    scene: Scene
    caption: Caption
    heldout: bool
    image: Image.Image

    def record(self) -> dict[str, Any]:
        """The JSON-friendly attribute record (stated attributes + ground truth)."""
        return {
            **self.caption.stated.to_dict(),
            "scene": self.scene.to_dict(),
            "heldout": self.heldout,
            "seed": self.seed,
        }


def make_sample(split: str, index: int, size: int = 64, seed: int = 0, pair_fraction: float = 0.5):
    """Build item ``index`` of ``split`` (deterministic; see the module docstring)."""
    s = scene_seed(split, index, seed)
    rng = np.random.default_rng(s)
    scene = sample_scene(rng, split, pair_fraction)
    caption = make_caption(scene, rng)
    image = render(scene, size, seed=int(rng.integers(2**63)))
    return ShapesSample(index, s, scene, caption, is_heldout(scene), image)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 ``(3, H, W)`` tensor in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)


class ShapesDataset(Dataset):
    """The shapes benchmark as a map-style torch ``Dataset``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint seeds; held-out combinations only
            in test).
        size: image side in pixels (32, 64 or 128 are the benchmark sizes).
        length: number of items.
        seed: dataset seed in [0, 200); different seeds give different items of the same split.
        pair_fraction: share of two-object scenes.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 64,
        length: int = 10_000,
        seed: int = 0,
        pair_fraction: float = 0.5,
    ) -> None:
        self.split = check_split(split)
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if not 0.0 <= pair_fraction <= 1.0:
            raise ValueError(f"pair_fraction must be in [0, 1], got {pair_fraction}")
        scene_seed(split, length - 1, seed)  # validates seed and length
        self.size, self.length, self.seed, self.pair_fraction = size, length, seed, pair_fraction

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> ShapesSample:
        """Item ``index`` as a :class:`ShapesSample` (PIL image, scene, caption)."""
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length}")
        index %= self.length
        return make_sample(self.split, index, self.size, self.seed, self.pair_fraction)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, dict[str, Any]]:
        item = self.sample(index)
        return pil_to_tensor(item.image), item.caption.text, item.record()


def collate_shapes(
    batch: Sequence[tuple[torch.Tensor, str, dict[str, Any]]],
) -> tuple[torch.Tensor, list[str], list[dict[str, Any]]]:
    """DataLoader ``collate_fn``: stack images ``(B, 3, H, W)``, keep captions/records as lists."""
    images, captions, records = zip(*batch)
    return torch.stack(images), list(captions), list(records)


def export_folder(
    out: str | os.PathLike,
    n: int,
    size: int = 64,
    split: str = "train",
    seed: int = 0,
    pair_fraction: float = 0.5,
    progress: bool = True,
) -> Path:
    """Write ``n`` items as ``{index:06d}.png`` plus ``captions.jsonl`` into ``out``.

    Each JSONL line holds ``file``, ``caption``, ``attributes`` (stated), ``scene`` (truth),
    ``heldout``, ``split`` and ``seed``. The JSONL is written to a temporary name and renamed at
    the end, so an interrupted export leaves PNGs but no half-written index.

    Returns:
        The output folder.
    """
    dataset = ShapesDataset(split, size, n, seed, pair_fraction)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CAPTIONS_FILE + ".partial")
    with tmp.open("w") as f:
        for i in tqdm(range(n), desc=f"shapes {split}", disable=not progress, unit="img"):
            item = dataset.sample(i)
            name = f"{i:06d}.png"
            item.image.save(out / name)
            line = {
                "file": name,
                "caption": item.caption.text,
                "attributes": item.caption.stated.to_dict(),
                "scene": item.scene.to_dict(),
                "heldout": item.heldout,
                "split": split,
                "seed": item.seed,
            }
            f.write(json.dumps(line) + "\n")
    tmp.replace(out / CAPTIONS_FILE)
    log.info("shapes.export", out=str(out), n=n, size=size, split=split, seed=seed)
    return out


def _render_range(args: tuple[str, int, int, int, int, float]) -> tuple[np.ndarray, list[str]]:
    split, start, stop, size, seed, pair_fraction = args
    images, captions = [], []
    for i in range(start, stop):
        s = make_sample(split, i, size, seed, pair_fraction=pair_fraction)
        images.append(np.asarray(s.image.convert("RGB"), dtype=np.uint8))
        captions.append(s.caption.text)
    return np.stack(images), captions


def render_items(
    n: int,
    size: int = 64,
    *,
    split: str = "train",
    seed: int = 0,
    pair_fraction: float = 0.5,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, list[str]]:
    """Items ``0 .. n-1`` of ``split`` (:func:`make_sample`), rendered by ``workers``
    processes (default: the CPUs, at most 16) -> uint8 ``(n, 3, size, size)`` and captions.
    The result does not depend on ``workers``. ``progress`` shows a tqdm bar (which honours
    ``TQDM_DISABLE``)."""
    import math
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    workers = workers or max(1, min(16, os.cpu_count() or 1))
    chunk = max(1, math.ceil(n / (workers * 4)))
    jobs = [(split, a, min(n, a + chunk), size, seed, pair_fraction) for a in range(0, n, chunk)]
    bar = {} if progress else {"disable": True}
    if workers == 1:
        parts = list(tqdm(map(_render_range, jobs), total=len(jobs), desc="render", **bar))
    else:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(tqdm(pool.map(_render_range, jobs), total=len(jobs), desc="render", **bar))
    images = np.concatenate([p[0] for p in parts]).transpose(0, 3, 1, 2)
    captions = [c for p in parts for c in p[1]]
    return torch.from_numpy(np.ascontiguousarray(images)), captions
