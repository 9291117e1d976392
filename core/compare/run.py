"""Run one recipe through everything ``t2i compare`` measures, then all of them in turn.

Per recipe, in this order: build + the first image (the cold start), the shapes evaluation
(:func:`t2i.shapes.evaluate.evaluate`, the same prompts and seeds for every recipe), speed at
batch 1 and at batch B (fresh seeds, so the executor's cache never answers), the images of the
sample and diversity grids, and the sweeps (sampling steps of a diffusion recipe; any of
:data:`FIELD_SWEEPS` the recipe binds as a request field; truncation's psi). A recipe that
fails to build or to draw its first image is :class:`Skipped` with the reason.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import structlog
import torch
from PIL import Image

from t2i.compare.measure import (
    MemoryProbe,
    TrainingCompute,
    file_bytes,
    training_compute,
    weights_path,
)
from t2i.compare.recipes import RecipeSpec
from t2i.compare.scores import ALIGNMENT, per_prompt_figures
from t2i.compare.stats import Interval, bootstrap_interval
from t2i.shapes.evaluate import EvalPrompt, EvalReport, evaluate, prompt_set
from t2i.shapes.judge import ShapesJudge

log = structlog.get_logger(__name__)

SHAPES = {"SampleDiffusion": "diffusion", "SampleTokens": "tokens", "SampleOnce": "single pass"}
FIELD_SWEEPS: dict[str, tuple[Any, ...]] = {
    "temperature": (0.5, 1.0, 1.5),
    "top_k": (4, 32, 256),
}
"""Request fields swept when a recipe binds them (a token sampler's, in the core's nodes)."""
TRUNCATION_PSI = (0.5, 0.75, 1.0)
GRID_PROMPTS = 8
DIVERSITY_SEEDS = 8
DIVERSITY_PROMPT = 1  # the first two-object prompt of the set
SPEED_SEED = 1_000_000


@attrs.define
class CompareSettings:
    """The options of one comparison (the same for every recipe)."""

    n_prompts: int = 64
    n_seeds: int = 4
    seed: int = 0
    size: int = 64
    device: str | None = None
    batch_size: int = 64
    steps: int | None = None
    step_counts: tuple[int, ...] = (4, 8, 16)
    sweeps: bool = True
    speed_calls: int = 4
    n_boot: int = 2000

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class Skipped:
    """A recipe left out, and why."""

    recipe: str
    checkpoint: str | None
    reason: str


@attrs.define
class RecipeRun:
    """Everything measured for one recipe (images kept for the figures, not the JSON)."""

    recipe: str
    checkpoint: str | None
    plugin: str
    shape: str
    device: str
    report: EvalReport
    per_prompt: dict[str, list[float]]
    intervals: dict[str, Interval]
    images_per_second: dict[str, float]
    cold_start_seconds: float
    weights: str | None
    weights_bytes: int | None
    peak_memory_bytes: int | None
    memory_method: str
    training: TrainingCompute
    sweeps: dict[str, list[tuple[Any, Interval]]] = attrs.Factory(dict)
    sample_images: list[Image.Image] = attrs.field(factory=list, repr=False)
    diversity_images: list[Image.Image] = attrs.field(factory=list, repr=False)


def check_device(device: str | None) -> None:
    """Refuse a device that is no device name or is not here (before any recipe runs)."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"--device {device!r} is not a device name: use cpu, cuda, cuda:1"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: CUDA is not available here; use --device cpu")


def pipeline_shape(pipe: Any) -> str:
    """The generation shape of a built pipeline, from its sampling nodes."""
    for node in pipe.graph:
        if node.type in SHAPES:
            return SHAPES[node.type]
    return "other"


class Generator:
    """``pipe`` as ``generate(prompt, seeds) -> images``, in calls of at most ``chunk``."""

    def __init__(self, pipe: Any, request: dict[str, Any], chunk: int) -> None:
        self.pipe, self.request, self.chunk = pipe, request, chunk

    def __call__(self, prompt: str, seeds: list[int], **fields: Any) -> list[Image.Image]:
        images: list[Image.Image] = []
        for start in range(0, len(seeds), self.chunk):
            part = seeds[start : start + self.chunk]
            result = self.pipe(
                prompt, seed=part[0], batch_size=len(part), **{**self.request, **fields}
            )
            images += list(result.images)
        return images


def _request(pipe: Any, shape: str, settings: CompareSettings) -> dict[str, Any]:
    request: dict[str, Any] = {"width": settings.size, "height": settings.size}
    if settings.steps is not None and shape == "diffusion":
        request["steps"] = settings.steps
    return request


def _speed(
    generate: Generator,
    prompts: Sequence[EvalPrompt],
    batch: int,
    calls: int,
    warm_up: bool = False,
) -> float:
    """Images per second over ``calls`` calls of ``batch`` images (fresh seeds each), after
    an untimed call of the same size when ``warm_up``."""
    generate.chunk = batch
    if warm_up:  # the first call at a new batch size pays for one-off work (memory dry run)
        generate(prompts[0].text, list(range(SPEED_SEED - batch, SPEED_SEED)))
    start = time.perf_counter()
    for c in range(calls):
        seed = SPEED_SEED + batch * c + 7919 * batch
        generate(prompts[c % len(prompts)].text, list(range(seed, seed + batch)))
    seconds = time.perf_counter() - start
    return batch * calls / seconds if seconds > 0 else float("inf")


def _score(
    generate: Generator,
    prompts: Sequence[EvalPrompt],
    seeds: list[int],
    judge: ShapesJudge,
    settings: CompareSettings,
    **fields: Any,
) -> tuple[EvalReport, list[list[Image.Image]], dict[str, list[float]], dict[str, Interval]]:
    """The shapes evaluation with ``fields`` set, its per-prompt figures and intervals."""
    generate.chunk = max(1, min(settings.n_seeds, settings.batch_size))

    def gen(prompt: str, s: list[int]) -> list[Image.Image]:
        return generate(prompt, s, **fields)

    report, images = evaluate(gen, prompts, seeds, judge=judge, size=settings.size, progress=False)
    table = per_prompt_figures(report, prompts)
    intervals = {
        f: bootstrap_interval(v, n_boot=settings.n_boot, seed=settings.seed)
        for f, v in table.items()
    }
    return report, images, table, intervals


def sweep_fields(pipe: Any, shape: str, settings: CompareSettings) -> dict[str, tuple[Any, ...]]:
    """Request field -> values to sweep, for the fields this recipe binds."""
    bound = set(pipe.recipe.bindings)
    out: dict[str, tuple[Any, ...]] = {}
    if shape == "diffusion" and "steps" in bound and settings.step_counts:
        out["steps"] = tuple(settings.step_counts)
    out.update({f: v for f, v in FIELD_SWEEPS.items() if f in bound})
    if pipe.defaults.get("guidance") == "truncation" and "cfg_scale" in bound:
        out["cfg_scale"] = TRUNCATION_PSI
    return out


def _sweeps(
    pipe: Any,
    shape: str,
    generate: Generator,
    prompts: Sequence[EvalPrompt],
    seeds: list[int],
    judge: ShapesJudge,
    settings: CompareSettings,
) -> dict[str, list[tuple[Any, Interval]]]:
    """Overall alignment (with its interval) at each value of each field to sweep."""
    out: dict[str, list[tuple[Any, Interval]]] = {}
    for field, values in sweep_fields(pipe, shape, settings).items():
        points = []
        for value in values:
            try:
                _, _, _, intervals = _score(
                    generate, prompts, seeds, judge, settings, **{field: value}
                )
            except ValueError as exc:  # a value the recipe refuses (RequestError is one)
                log.warning("compare.sweep_value_refused", field=field, value=value, error=str(exc))
                continue
            points.append((value, intervals["overall"]))
        out[field] = points
    return out


def _grid_images(generate: Generator, settings: CompareSettings) -> tuple[list, list]:
    """The sample grid (8 prompts, seed ``seed``) and the diversity grid (1 prompt, 8 seeds)."""
    grid_prompts = prompt_set(max(GRID_PROMPTS, DIVERSITY_PROMPT + 1))
    generate.chunk = 1
    samples = [generate(p.text, [settings.seed])[0] for p in grid_prompts[:GRID_PROMPTS]]
    generate.chunk = max(1, min(DIVERSITY_SEEDS, settings.batch_size))
    seeds = list(range(settings.seed, settings.seed + DIVERSITY_SEEDS))
    return samples, generate(grid_prompts[DIVERSITY_PROMPT].text, seeds)


def _build(spec: RecipeSpec, settings: CompareSettings, manager: Any) -> tuple[Any, float]:
    """Build the recipe and draw its first image: the pipeline and the cold start in s."""
    from t2i import Engine

    options: dict[str, Any] = {"plugins": manager, "device": settings.device}
    if spec.checkpoint is not None:
        options["checkpoint"] = spec.checkpoint
    start = time.perf_counter()
    pipe = Engine.build(spec.name, **options)
    request = _request(pipe, pipeline_shape(pipe), settings)
    pipe(prompt_set(1)[0].text, seed=settings.seed, batch_size=1, **request)
    return pipe, time.perf_counter() - start


def _parameters(pipe: Any) -> int:
    try:
        return int(pipe.parameter_count())
    except Exception as exc:  # informative only: a recipe without the count still compares
        log.warning("compare.no_parameter_count", error=str(exc))
        return 0


def run_recipe(
    spec: RecipeSpec, settings: CompareSettings, judge: ShapesJudge, manager: Any
) -> RecipeRun | Skipped:
    """Measure one recipe (see the module docstring); :class:`Skipped` with the reason if it
    cannot build, or fails while measured (one broken recipe never ends the comparison)."""
    probe = MemoryProbe(settings.device)
    probe.start()
    try:
        pipe, cold = _build(spec, settings, manager)
    except Exception as exc:  # any failure to build is this recipe's, reported, not fatal
        log.warning("compare.skipped", recipe=spec.name, error=str(exc))
        return Skipped(spec.name, spec.checkpoint, f"{type(exc).__name__}: {exc}")
    try:
        return _measure(spec, pipe, cold, probe, settings, judge, manager)
    except Exception as exc:
        log.exception("compare.failed", recipe=spec.name)
        reason = f"failed while measured: {type(exc).__name__}: {exc}"
        return Skipped(spec.name, spec.checkpoint, reason)


def _measure(
    spec: RecipeSpec,
    pipe: Any,
    cold: float,
    probe: MemoryProbe,
    settings: CompareSettings,
    judge: ShapesJudge,
    manager: Any,
) -> RecipeRun:
    shape = pipeline_shape(pipe)
    generate = Generator(pipe, _request(pipe, shape, settings), 1)
    prompts = prompt_set(settings.n_prompts)
    seeds = list(range(settings.seed, settings.seed + settings.n_seeds))
    report, _, table, intervals = _score(generate, prompts, seeds, judge, settings)
    report.parameters = _parameters(pipe)
    speed = {
        "1": _speed(generate, prompts, 1, settings.speed_calls),
        str(settings.batch_size): _speed(generate, prompts, settings.batch_size, 1, warm_up=True),
    }
    samples, diverse = _grid_images(generate, settings)
    sweeps = {}
    if settings.sweeps:
        sweeps = _sweeps(pipe, shape, generate, prompts, seeds, judge, settings)
    entry = manager.registry.get("recipe", spec.name)
    folder = weights_path(entry.name, entry.factory, spec.checkpoint)
    return RecipeRun(
        recipe=spec.name,
        checkpoint=spec.checkpoint,
        plugin=entry.plugin,
        shape=shape,
        device=str(pipe.device),
        report=report,
        per_prompt=table,
        intervals=intervals,
        images_per_second=speed,
        cold_start_seconds=cold,
        weights=str(folder) if folder else None,
        weights_bytes=file_bytes(folder),
        peak_memory_bytes=probe.peak_bytes(),
        memory_method=probe.method,
        training=training_compute(folder),
        sweeps=sweeps,
        sample_images=samples,
        diversity_images=diverse,
    )


def run_all(
    specs: Sequence[RecipeSpec],
    settings: CompareSettings,
    *,
    judge: ShapesJudge | None = None,
    manager: Any = None,
    on_recipe: Callable[[RecipeRun | Skipped], None] | None = None,
) -> tuple[list[RecipeRun], list[Skipped]]:
    """Run every recipe in turn (one at a time, memory freed in between)."""
    from t2i.plugins import get_plugin_manager
    from t2i.shapes.judge import load_judge

    manager = manager or get_plugin_manager()
    judge = judge if judge is not None else load_judge()
    runs: list[RecipeRun] = []
    skipped: list[Skipped] = []
    for spec in specs:
        log.info("compare.recipe", recipe=spec.name, checkpoint=spec.checkpoint)
        outcome = run_recipe(spec, settings, judge, manager)
        (runs if isinstance(outcome, RecipeRun) else skipped).append(outcome)
        if on_recipe is not None:
            on_recipe(outcome)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return runs, skipped


__all__ = ["ALIGNMENT", "CompareSettings", "RecipeRun", "Skipped", "run_all", "run_recipe"]
