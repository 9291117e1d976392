"""Per-prompt figures of one shapes evaluation: what the bootstrap of ``t2i compare`` resamples.

:func:`~t2i.shapes.evaluate.evaluate` records, per image, the judge's reading and whether the
image is aligned. Here each image's stated attributes are matched again
(:func:`~t2i.shapes.metrics.attribute_matches`) and folded into the issue's five attributes
(shape, colour, size, position, relation; a pair's shape is both objects' shapes), plus the
object count and the background; then averaged per prompt over its seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from t2i.shapes.evaluate import EvalPrompt, EvalReport
from t2i.shapes.metrics import attribute_matches
from t2i.shapes.scene import Scene

ALIGNMENT = ("overall", "single", "pair")
ATTRIBUTES = ("shape", "color", "size", "position", "relation", "count", "background")
_COARSE = {
    "single.shape": "shape",
    "pair.shape": "shape",
    "single.color": "color",
    "pair.color": "color",
    "single.size": "size",
    "pair.size": "size",
    "single.position": "position",
    "pair.relation": "relation",
    "count": "count",
    "background": "background",
}
FIGURES = ALIGNMENT + ATTRIBUTES


def image_figures(stated: Scene, read: Scene, aligned: bool) -> dict[str, float]:
    """One image's figures: 1.0 / 0.0 for each one its prompt asks for."""
    out = {"overall": float(aligned), stated.kind: float(aligned)}
    for key, ok in attribute_matches(stated, read).items():
        out[_COARSE[key]] = float(ok)
    return out


def per_prompt_figures(report: EvalReport, prompts: Sequence[EvalPrompt]) -> dict[str, list[float]]:
    """Figure -> one value per prompt (the mean over its seeds; NaN where not asked)."""
    k = len(report.seeds)
    if len(report.samples) != k * len(prompts):
        raise ValueError(f"{len(report.samples)} samples for {len(prompts)} prompts x {k} seeds")
    table = {f: np.full(len(prompts), np.nan) for f in FIGURES}
    for i, p in enumerate(prompts):
        rows = [
            image_figures(p.stated, Scene.from_dict(s["read"]), bool(s["aligned"]))
            for s in report.samples[i * k : (i + 1) * k]
        ]
        for f in rows[0]:
            table[f][i] = float(np.mean([r[f] for r in rows]))
    return {f: v.tolist() for f, v in table.items() if not np.isnan(v).all()}
