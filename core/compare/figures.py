"""The figures of ``t2i compare`` (matplotlib, Agg backend; the ``figures`` extra).

Each function draws one PNG and returns its path: the alignment / speed scatter (log x), the
per-attribute bars, an image grid (the sample grid and the diversity grid of a recipe) and a
sweep's curve (alignment vs sampling steps, or vs a request field). Error bars are the 95%
bootstrap intervals over prompts. matplotlib is imported here only, when a figure is drawn.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from t2i.compare.run import RecipeRun
from t2i.compare.scores import ATTRIBUTES
from t2i.compare.stats import Interval


def available() -> bool:
    """Whether matplotlib is installed (``pip install 't2i[figures]'``)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _err(intervals: Sequence[Interval]) -> list[list[float]]:
    """matplotlib's asymmetric error bars (0 where undefined)."""
    below = [0.0 if math.isnan(i.low) else max(i.value - i.low, 0.0) for i in intervals]
    above = [0.0 if math.isnan(i.high) else max(i.high - i.value, 0.0) for i in intervals]
    return [below, above]


def scatter(runs: Sequence[RecipeRun], speed_key: str, path: Path) -> Path:
    """Alignment (overall, with its interval) against images/s at batch ``speed_key``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for run in runs:
        x, a = run.images_per_second[speed_key], run.intervals["overall"]
        ax.errorbar([x], [a.value], yerr=_err([a]), fmt="o", capsize=4, label=run.recipe)
        ax.annotate(run.recipe, (x, a.value), textcoords="offset points", xytext=(6, 4))
    ax.set_xscale("log")
    ax.set_xlabel(f"images / s (batch {speed_key}, log scale)")
    ax.set_ylabel("alignment (overall, 95% interval)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def attribute_bars(runs: Sequence[RecipeRun], path: Path) -> Path:
    """Grouped bars: per attribute, one bar per recipe, with intervals."""
    plt = _pyplot()
    names = [a for a in ATTRIBUTES if any(a in r.intervals for r in runs)]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    width = 0.8 / max(len(runs), 1)
    for k, run in enumerate(runs):
        ivs = [run.intervals.get(a, Interval(math.nan, math.nan, math.nan, 0)) for a in names]
        xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(names))]
        values = [0.0 if math.isnan(i.value) else i.value for i in ivs]
        ax.bar(xs, values, width, yerr=_err(ivs), capsize=2, label=run.recipe)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("read back by the judge")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    return _save(fig, path)


def image_grid(
    images: Sequence[Image.Image], titles: Sequence[str], heading: str, path: Path, cols: int = 4
) -> Path:
    """Images in rows of ``cols``, each titled (a prompt, wrapped, or a seed)."""
    plt = _pyplot()
    rows = max(1, math.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image.convert("RGB"))
        ax.set_title("\n".join(textwrap.wrap(title, 28)), fontsize=7)
    fig.suptitle(heading, fontsize=10)
    return _save(fig, path)


def sweep_curve(field: str, curves: dict[str, list[tuple[Any, Interval]]], path: Path) -> Path:
    """Alignment (overall) against the swept ``field``, one line per recipe."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for recipe, points in curves.items():
        xs = [float(v) for v, _ in points]
        ivs = [i for _, i in points]
        ax.errorbar(xs, [i.value for i in ivs], yerr=_err(ivs), marker="o", capsize=3,
                    label=recipe)  # fmt: skip
    if field in ("steps", "top_k"):
        ax.set_xscale("log")
    ax.set_xlabel(SWEEP_LABELS.get(field, field))
    ax.set_ylabel("alignment (overall, 95% interval)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


SWEEP_LABELS = {
    "steps": "sampling steps",
    "cfg_scale": "truncation psi (cfg_scale)",
    "temperature": "temperature",
    "top_k": "top-k",
}
