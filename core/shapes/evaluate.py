"""``t2i eval``: score a text-to-image generator on the shapes benchmark.

The core is :func:`evaluate`, which takes any ``generate(prompt, seeds) -> list[PIL.Image]``
(testable without the engine); :func:`evaluate_recipe` adapts a registered recipe through
``Engine.build``. The prompt set is fixed and versioned (:data:`PROMPT_SET_VERSION`): prompt
``i`` is drawn from the *test* split (held-out combinations included) by a seed of its own,
alternating single-object and two-object scenes, so any prefix is half single, half pair and
``prompt_set(n)`` is a prefix of ``prompt_set(m)`` for ``n < m``.

Real renders for the Fréchet distance are the prompts' own ground-truth scenes, rendered with
the same seeds the generator gets.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import structlog
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from t2i.shapes.captions import make_caption
from t2i.shapes.judge import ShapesJudge, decode_predictions, load_judge, prepare
from t2i.shapes.metrics import diversity, frechet_distance, prompt_alignment
from t2i.shapes.render import render
from t2i.shapes.scene import Scene
from t2i.shapes.splits import SPLIT_SEED_BASE, sample_scene

log = structlog.get_logger(__name__)

PROMPT_SET_VERSION = "shapes-eval-v1"
_PROMPT_SEED_BASE = SPLIT_SEED_BASE["test"] + 199 * 2**32  # test range, apart from datasets

Generate = Callable[[str, list[int]], list[Image.Image]]


@attrs.frozen
class EvalPrompt:
    """One prompt of the evaluation set.

    Attributes:
        index: position in the prompt set.
        text: the caption given to the generator.
        stated: the attributes the caption states (scored).
        scene: the complete scene the caption was drawn from (rendered as the real reference).
    """

    index: int
    text: str
    stated: Scene
    scene: Scene


def prompt_set(n: int) -> list[EvalPrompt]:
    """The first ``n`` prompts of :data:`PROMPT_SET_VERSION` (even index single, odd pair)."""
    if n < 1:
        raise ValueError(f"the prompt set needs n >= 1, got {n}")
    prompts = []
    for i in range(n):
        rng = np.random.default_rng(_PROMPT_SEED_BASE + i)
        scene = sample_scene(rng, "test", pair_fraction=float(i % 2))
        caption = make_caption(scene, rng)
        prompts.append(EvalPrompt(i, caption.text, caption.stated, scene))
    return prompts


@attrs.define
class EvalReport:
    """What :func:`evaluate` measures; :meth:`to_dict` is ``report.json``."""

    alignment: dict[str, float]
    per_attribute: dict[str, float]
    frechet_distance: float
    diversity: float
    images_per_second: float
    parameters: int
    n_images: int
    prompt_set_version: str
    seeds: list[int]
    options: dict[str, Any]
    samples: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def to_markdown(self) -> str:
        """A markdown summary table (``report.md``)."""
        recipe = self.options.get("recipe", "-")
        lines = [
            f"# Shapes benchmark: {recipe}",
            "",
            f"prompt set `{self.prompt_set_version}`, {self.n_images} images, "
            f"seeds {self.seeds}, options `{json.dumps(self.options, default=str)}`",
            "",
            "| metric | value |",
            "| --- | --- |",
            f"| alignment (overall) | {self.alignment['overall']:.3f} |",
            f"| alignment (single object) | {self.alignment['single']:.3f} |",
            f"| alignment (two objects) | {self.alignment['pair']:.3f} |",
            f"| Fréchet distance (judge features) | {self.frechet_distance:.3f} |",
            f"| diversity | {self.diversity:.3f} |",
            f"| images / s | {self.images_per_second:.2f} |",
            f"| parameters | {self.parameters:,} |",
            "",
            "| attribute | read back |",
            "| --- | --- |",
        ]
        lines += [f"| {k} | {v:.3f} |" for k, v in self.per_attribute.items()]
        return "\n".join(lines) + "\n"


def _real_features(judge: ShapesJudge, prompts: Sequence[EvalPrompt], seeds, size: int):
    images = [render(p.scene, size, seed=10_000 * p.index + s) for p in prompts for s in seeds]
    return judge.predict(images)[1]


def evaluate(
    generate: Generate,
    prompts: Sequence[EvalPrompt],
    seeds: Sequence[int],
    *,
    judge: ShapesJudge | None = None,
    size: int = 64,
    parameters: int = 0,
    options: dict[str, Any] | None = None,
    progress: bool = True,
    keep_images: bool = True,
) -> tuple[EvalReport, list[list[Image.Image]]]:
    """Generate every prompt with every seed and score the images with the judge.

    Args:
        generate: ``generate(prompt, seeds) -> list of PIL images``, one per seed.
        prompts: the prompts (see :func:`prompt_set`).
        seeds: the seeds of each prompt.
        judge: the judge (default: :func:`~t2i.shapes.judge.load_judge`).
        size: side of the real reference renders (match the generated size).
        parameters: the generator's parameter count, reported as is.
        options: recorded in the report (recipe, steps ...).
        progress: show a tqdm bar.
        keep_images: return the images (for the sample grid); else an empty list.

    Returns:
        ``(report, images per prompt)``.
    """
    seeds = [int(s) for s in seeds]
    if not prompts or not seeds:
        raise ValueError("evaluate needs at least one prompt and one seed")
    judge = judge if judge is not None else load_judge()
    all_images, prepared, stated = [], [], []
    seconds = 0.0
    for p in tqdm(prompts, desc="shapes eval", unit="prompt", disable=not progress):
        start = time.perf_counter()
        images = generate(p.text, list(seeds))
        seconds += time.perf_counter() - start
        if len(images) != len(seeds) or not all(isinstance(im, Image.Image) for im in images):
            raise ValueError(
                f"generate() must return one PIL image per seed ({len(seeds)}), got "
                f"{len(images)} items of types {sorted({type(im).__name__ for im in images})}"
            )
        prepared.append(prepare(images))  # (K, 3, 64, 64): judged all at once below
        stated += [p.stated] * len(images)
        all_images.append(images if keep_images else [])
    ids, features = judge.predict(torch.cat(prepared))
    readings = decode_predictions(ids)
    per_prompt_features = list(features.split(len(seeds)))
    samples = [
        {"prompt": p.text, "seed": s, "read": readings[i * len(seeds) + k].to_dict()}
        for i, p in enumerate(prompts)
        for k, s in enumerate(seeds)
    ]
    align = prompt_alignment(stated, readings)
    for sample, ok in zip(samples, align["aligned"]):
        sample["aligned"] = ok
    gen_features = np.concatenate([f.numpy() for f in per_prompt_features])
    real = _real_features(judge, prompts, seeds, size)
    n_images = len(readings)
    report = EvalReport(
        alignment={k: align[k] for k in ("overall", "single", "pair")},
        per_attribute=align["per_attribute"],
        frechet_distance=frechet_distance(gen_features, real) if n_images >= 2 else math.nan,
        diversity=diversity([f.numpy() for f in per_prompt_features]),
        images_per_second=n_images / seconds if seconds > 0 else math.inf,
        parameters=int(parameters),
        n_images=n_images,
        prompt_set_version=PROMPT_SET_VERSION,
        seeds=seeds,
        options=dict(options or {}),
        samples=samples,
    )
    log.info("shapes.eval", overall=report.alignment["overall"], n_images=n_images)
    return report, all_images


def sample_grid(
    images: Sequence[Sequence[Image.Image]],
    prompts: Sequence[EvalPrompt],
    max_prompts: int = 16,
    max_seeds: int = 4,
    cell: int = 96,
) -> Image.Image:
    """A PNG-ready grid: one row per prompt (its text on the left), one column per seed."""
    rows = [(p, ims[:max_seeds]) for p, ims in zip(prompts, images) if ims][:max_prompts]
    if not rows:
        raise ValueError("no images for the sample grid")
    text_w, cols = 360, max(len(ims) for _, ims in rows)
    grid = Image.new("RGB", (text_w + cols * cell, len(rows) * cell), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (p, ims) in enumerate(rows):
        words, line, lines = p.text.split(), "", []
        for w in words:  # wrap at ~56 characters
            if len(line) + len(w) > 56:
                lines.append(line)
                line = ""
            line = f"{line} {w}".strip()
        lines.append(line)
        draw.multiline_text((6, r * cell + 6), "\n".join(lines), fill=(0, 0, 0))
        for c, im in enumerate(ims):
            grid.paste(im.convert("RGB").resize((cell, cell)), (text_w + c * cell, r * cell))
    return grid


def write_report(
    report: EvalReport,
    out: str | Path,
    images: Sequence[Sequence[Image.Image]] = (),
    prompts: Sequence[EvalPrompt] = (),
) -> Path:
    """Write ``report.json``, ``report.md`` and (with images) ``samples.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    (out / "report.md").write_text(report.to_markdown())
    if images and any(images):
        sample_grid(images, prompts).save(out / "samples.png")
    return out


def evaluate_recipe(
    name: str,
    checkpoint: str | None = None,
    *,
    out: str | Path | None = None,
    n_prompts: int = 64,
    n_seeds: int = 4,
    seed: int = 0,
    steps: int | None = None,
    size: int = 64,
    batch_size: int | None = None,
    cfg_scale: float | None = None,
    sampler: str | None = None,
    judge: ShapesJudge | None = None,
    progress: bool = True,
    **build_options: Any,
) -> EvalReport:
    """Build recipe ``name`` with the engine and :func:`evaluate` it on the fixed prompt set.

    Each prompt gets seeds ``seed .. seed + n_seeds - 1``; they are generated in calls of
    ``batch_size`` images (default: all seeds at once) as
    ``pipe(prompt, seed=s0, batch_size=len(chunk), width=size, height=size, steps=...)``, the
    engine giving image ``i`` the seed ``s0 + i``.

    Args:
        name: registered recipe name.
        checkpoint: passed as ``Engine.build(name, checkpoint=checkpoint)`` when given.
        out: folder for ``report.json``, ``report.md`` and ``samples.png`` (None: write nothing).
        build_options: further ``Engine.build`` overrides.
    """
    from t2i import Engine

    if checkpoint is not None:
        build_options["checkpoint"] = checkpoint
    pipe = Engine.build(name, **build_options)
    request: dict[str, Any] = {"width": size, "height": size}
    for key, value in (("steps", steps), ("cfg_scale", cfg_scale), ("sampler", sampler)):
        if value is not None:
            request[key] = value
    chunk = batch_size or n_seeds

    def generate(prompt: str, seeds: list[int]) -> list[Image.Image]:
        images: list[Image.Image] = []
        for start in range(0, len(seeds), chunk):
            part = seeds[start : start + chunk]
            result = pipe(prompt, seed=part[0], batch_size=len(part), **request)
            images += list(result.images)
        return images

    try:
        parameters = int(pipe.parameter_count())
    except Exception as exc:  # the count is informative; a recipe without it still evaluates
        log.warning("shapes.eval.no_parameter_count", error=str(exc))
        parameters = 0
    prompts = prompt_set(n_prompts)
    extra = {k: str(v) for k, v in build_options.items() if k != "checkpoint"}
    options = {"recipe": name, "checkpoint": checkpoint, "size": size, "batch_size": chunk}
    options.update(request, **extra)
    report, images = evaluate(
        generate,
        prompts,
        list(range(seed, seed + n_seeds)),
        judge=judge,
        size=size,
        parameters=parameters,
        options=options,
        progress=progress,
    )
    if out is not None:
        write_report(report, out, images, prompts)
    return report
