"""``t2i compare``'s output folder: ``report.json``, ``report.md`` and the PNG figures.

The folder must be new or empty (``overwrite=True`` writes into a non-empty one): a
comparison is never silently mixed with an older one's figures.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from t2i.compare import figures
from t2i.compare.run import DIVERSITY_PROMPT, CompareSettings, RecipeRun, Skipped
from t2i.compare.scores import ALIGNMENT, ATTRIBUTES, FIGURES
from t2i.compare.stats import Difference, pairwise_differences
from t2i.shapes.evaluate import PROMPT_SET_VERSION, prompt_set

log = structlog.get_logger(__name__)


class OutputExistsError(ValueError):
    """The output folder holds files; the message names ``--overwrite``."""


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; a file at ``out`` always."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file: name a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"--out {out} is not empty: name a new folder, or pass --overwrite to write into it"
        )


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _recipe_figures(run: RecipeRun, out: Path) -> dict[str, str]:
    grid_prompts = prompt_set(len(run.sample_images))
    samples = figures.image_grid(
        run.sample_images, [p.text for p in grid_prompts],
        f"{run.recipe}: {len(grid_prompts)} prompts, seed {run.report.seeds[0]}",
        out / f"samples-{_slug(run.recipe)}.png",
    )  # fmt: skip
    seeds = [f"seed {run.report.seeds[0] + i}" for i in range(len(run.diversity_images))]
    diverse = figures.image_grid(
        run.diversity_images, seeds,
        f"{run.recipe}: {prompt_set(DIVERSITY_PROMPT + 1)[-1].text!r}, {len(seeds)} seeds",
        out / f"diversity-{_slug(run.recipe)}.png",
    )  # fmt: skip
    return {"samples": samples.name, "diversity": diverse.name}


def write_figures(runs: Sequence[RecipeRun], out: Path, speed_key: str) -> dict[str, Any]:
    """Every figure; ``{"note": ...}`` alone when matplotlib is not installed."""
    if not figures.available():
        return {"note": "matplotlib is not installed (pip install 't2i[figures]'): no figures"}
    if not runs:
        return {}
    done: dict[str, Any] = {
        "scatter": figures.scatter(runs, speed_key, out / "alignment-vs-speed.png").name,
        "attributes": figures.attribute_bars(runs, out / "attributes.png").name,
        "recipes": {r.recipe: _recipe_figures(r, out) for r in runs},
        "sweeps": {},
    }
    for field in sorted({f for r in runs for f in r.sweeps}):
        curves = {r.recipe: r.sweeps[field] for r in runs if r.sweeps.get(field)}
        if curves:
            path = figures.sweep_curve(field, curves, out / f"sweep-{_slug(field)}.png")
            done["sweeps"][field] = path.name
    return done


def _sweeps_not_run(runs: Sequence[RecipeRun], settings: CompareSettings) -> dict[str, str]:
    if not settings.sweeps:
        return {r.recipe: "sweeps turned off (--no-sweeps)" for r in runs}
    return {
        r.recipe: "binds none of the swept fields (steps of a diffusion sampler, "
        "temperature, top_k, truncation psi)"
        for r in runs
        if not r.sweeps
    }


def run_to_dict(run: RecipeRun) -> dict[str, Any]:
    """One recipe's entry of ``report.json``."""
    r = run.report
    return {
        "recipe": run.recipe,
        "checkpoint": run.checkpoint,
        "plugin": run.plugin,
        "shape": run.shape,
        "device": run.device,
        "alignment": {f: run.intervals[f].to_dict() for f in ALIGNMENT if f in run.intervals},
        "attributes": {f: run.intervals[f].to_dict() for f in ATTRIBUTES if f in run.intervals},
        "per_attribute": r.per_attribute,
        "frechet_distance": r.frechet_distance,
        "diversity": r.diversity,
        "images_per_second": run.images_per_second,
        "cold_start_seconds": run.cold_start_seconds,
        "parameters": r.parameters,
        "weights": run.weights,
        "weights_bytes": run.weights_bytes,
        "peak_memory_bytes": run.peak_memory_bytes,
        "memory_method": run.memory_method,
        "training": run.training.to_dict(),
        "sweeps": {
            f: [{"value": v, "alignment": i.to_dict()} for v, i in pts]
            for f, pts in run.sweeps.items()
        },
        "per_prompt": run.per_prompt,
        "n_images": r.n_images,
    }


def build_report(
    runs: Sequence[RecipeRun],
    skipped: Sequence[Skipped],
    settings: CompareSettings,
    figure_files: dict[str, Any],
    differences: Sequence[Difference],
) -> dict[str, Any]:
    """The content of ``report.json``."""
    return {
        "prompt_set_version": PROMPT_SET_VERSION,
        "settings": settings.to_dict(),
        "interval": f"95% percentile bootstrap over prompts ({settings.n_boot} resamples, "
        f"numpy seed {settings.seed})",
        "recipes": [run_to_dict(r) for r in runs],
        "skipped": [
            {"recipe": s.recipe, "checkpoint": s.checkpoint, "reason": s.reason} for s in skipped
        ],
        "differences": [d.to_dict() for d in differences],
        "sweeps_not_run": _sweeps_not_run(runs, settings),
        "figures": figure_files,
    }


def write_comparison(
    out: Path,
    runs: Sequence[RecipeRun],
    skipped: Sequence[Skipped],
    settings: CompareSettings,
) -> dict[str, Any]:
    """Write figures, ``report.json`` and ``report.md`` into ``out`` (checked beforehand)."""
    from t2i.compare.markdown import to_markdown

    out.mkdir(parents=True, exist_ok=True)
    figure_files = write_figures(runs, out, str(settings.batch_size))
    per_prompt = {r.recipe: r.per_prompt for r in runs}
    differences = pairwise_differences(
        per_prompt, FIGURES, n_boot=settings.n_boot, seed=settings.seed
    )
    report = build_report(runs, skipped, settings, figure_files, differences)
    report = _finite(report)
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False, default=str))
    (out / "report.md").write_text(to_markdown(report))
    log.info("compare.written", out=str(out), recipes=len(runs), skipped=len(skipped))
    return report


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
