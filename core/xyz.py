"""The X/Y/Z plot: one image per combination of up to three axes over request fields.

The web UI's "X/Y/Z plot" script (A1111 ``scripts/xyz_grid.py``): each axis names a request
field (seed, steps, cfg_scale, sampler, schedule, size, strength, recipe, checkpoint, vae,
prompt S/R or any other field a recipe binds) and a list of values; every (x, y, z) cell is rendered
with the same seed unless the seed is an axis, and the images are tiled into a grid labelled
with the X values across the top and the Y values down the left, one grid per Z value, side
by side.

Numeric values take A1111's range syntax (its wiki, "X/Y/Z plot"):

- ``1-5`` -> 1, 2, 3, 4, 5; ``1-5 (+2)`` -> 1, 3, 5; ``10-5 (-3)`` -> 10, 7;
- ``1-3 (+0.5)`` -> 1, 1.5, 2, 2.5, 3 (float axes);
- ``1-10 [5]`` -> 1, 3, 5, 7, 10 (a count: evenly spaced, rounded down on integer axes);
- anything else is a comma-separated list (CSV quoting for values holding commas).

Example::

    from t2i import Engine
    from t2i.xyz import xyz_plot

    pipe = Engine.build("ldm-shapes")
    plot = xyz_plot(pipe, "a red circle", ["cfg_scale=3,5,7", "sampler=Euler,DPM++ 2M"])
    plot.grid.save("grid.png")
    plot.result.save("cells/")
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
from PIL import Image, ImageDraw

from t2i.request import REQUEST_FIELDS, RequestError
from t2i.result import GenerationResult

MAX_CELLS = 1024
"""Most images one plot renders (a typo such as ``1-100000`` is refused, not run)."""

INT_FIELDS = ("seed", "steps", "batch_size", "top_k")
FLOAT_FIELDS = ("cfg_scale", "strength", "eta", "temperature", "top_p", "noise_level")
PROMPT_SR = "prompt_sr"
ALIASES = {
    "cfg": "cfg_scale",
    "cfg scale": "cfg_scale",
    "denoising": "strength",
    "denoising strength": "strength",
    "denoising_strength": "strength",
    "sampler_name": "sampler",
    "scheduler": "schedule",
    "schedule type": "schedule",
    "checkpoint name": "checkpoint",
    "model": "recipe",
    "prompt s/r": PROMPT_SR,
    "s/r": PROMPT_SR,
    "sr": PROMPT_SR,
    "negative": "negative_prompt",
}
"""Other spellings of axis names (the web UI's labels included), lower case."""
PIPELINE_AXES = ("recipe", "checkpoint", "vae")
"""Axes whose values pick the pipeline (built once per value), not a request field."""
SPECIAL_AXES = ("size", *PIPELINE_AXES, PROMPT_SR)
LABELS = {"cfg_scale": "CFG scale", "strength": "Denoising", "top_k": "Top-k", "top_p": "Top-p"}
"""Grid labels where the web UI's name differs from the field's."""

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
_RANGE_INT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(([+-]\d+)\s*\))?\s*")
_RANGE_FLOAT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
_COUNT_INT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[(\d+)\s*\]\s*")
_COUNT_FLOAT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[(\d+)\s*\]\s*")
_SIZE = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")


class XYZError(RequestError):
    """An axis that cannot be plotted; the message names the axis and the fix."""


def _number(text: str, kind: type) -> int | float:
    return kind(text.replace(" ", ""))


def split_values(text: str) -> list[str]:
    """A comma-separated value list, CSV-quoted where a value holds a comma."""
    row = next(csv.reader([text], skipinitialspace=True), [])
    return [v.strip() for v in row if v.strip()]


def expand_range(item: str, kind: type) -> list[int | float] | None:
    """One range item (``1-5``, ``1-5 (+2)``, ``1-10 [5]``) as its values, or None if it is
    not a range. ``kind`` is ``int`` or ``float``."""
    count = (_COUNT_INT if kind is int else _COUNT_FLOAT).fullmatch(item)
    if count:
        start, end = _number(count[1], kind), _number(count[2], kind)
        n = int(count[3])
        if n < 1:
            return []
        if n == 1:
            return [start]
        values = [start + (end - start) * i / (n - 1) for i in range(n)]
        return [int(v) for v in values] if kind is int else [_tidy(v) for v in values]
    ranged = (_RANGE_INT if kind is int else _RANGE_FLOAT).fullmatch(item)
    if not ranged:
        return None
    start, end = _number(ranged[1], kind), _number(ranged[2], kind)
    step = _number(ranged[3], kind) if ranged[3] is not None else kind(1)
    if step == 0:
        raise ValueError(f"{item!r}: the step is 0")
    if kind is int:
        return list(range(start, end + (1 if step > 0 else -1), step))
    n = math.floor((end - start) / step + 1e-9) + 1
    return [_tidy(start + i * step) for i in range(max(n, 0))]


def _tidy(value: float) -> float:
    """Round away float noise (0.1 * 3 = 0.30000000000000004 -> 0.3)."""
    return round(value, 10)


def parse_values(text: str, kind: type | None) -> list[Any]:
    """An axis's value text as a list; numeric kinds expand ranges item by item."""
    items = split_values(text)
    if kind is None:
        return items
    values: list[Any] = []
    for item in items:
        expanded = expand_range(item, kind)
        if expanded is not None:
            values += expanded
        else:
            values.append(_number(item, kind))
    return values


@attrs.frozen
class Axis:
    """One axis: a request field (or ``size`` / ``recipe`` / ``checkpoint`` / ``vae`` /
    ``prompt_sr``)
    and its values, parsed."""

    field: str
    values: tuple[Any, ...]

    @classmethod
    def parse(cls, spec: str) -> Axis:
        """``"FIELD=VALUES"``: ``"cfg_scale=3-7 (+2)"``, ``"sampler=Euler,DPM++ 2M"``,
        ``"size=64x64,96x64"``, ``"prompt_sr=red,blue"``."""
        if not isinstance(spec, str) or "=" not in spec:
            raise XYZError("xyz", f"axis {spec!r}: write FIELD=VALUES, e.g. cfg_scale=3,5,7")
        name, _, text = spec.partition("=")
        return cls.of(name, text)

    @classmethod
    def of(cls, name: str, values: str | Sequence[Any]) -> Axis:
        """An axis from a field name and either value text (ranges allowed) or a list."""
        field = ALIASES.get(name.strip().lower(), name.strip().lower().replace(" ", "_"))
        if field not in REQUEST_FIELDS and field not in SPECIAL_AXES:
            field = field.replace("-", "_")
        kind = int if field in INT_FIELDS else float if field in FLOAT_FIELDS else None
        try:
            if isinstance(values, str):
                parsed = parse_values(values, kind)
            else:
                parsed = [kind(v) if kind and isinstance(v, str) else v for v in values]
            if field == "size":
                parsed = [_size(v) for v in parsed]
        except ValueError as exc:
            want = {int: "integers", float: "numbers"}.get(kind, "values")
            raise XYZError(
                "xyz", f"axis {name!r}: {exc}; give {want} or a range such as 1-5 (+2)"
            ) from None
        if not parsed:
            raise XYZError("xyz", f"axis {name!r} has no values")
        if field == PROMPT_SR and len(parsed) < 1:
            raise XYZError("xyz", "prompt_sr: give the search text first, then replacements")
        return cls(field, tuple(parsed))

    def label(self, value: Any) -> str:
        """How a cell of this axis is labelled in the grid (A1111: ``CFG scale: 7``)."""
        if self.field == "size":
            return f"Size: {value[0]}x{value[1]}"
        if self.field == PROMPT_SR:
            return str(value)
        if self.field == "vae":  # a file: its name, as A1111 labels the VAE axis
            return f"VAE: {Path(str(value)).name}"
        name = LABELS.get(self.field, self.field.replace("_", " ").capitalize())
        return f"{name}: {value}"


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    match = _SIZE.fullmatch(str(value))
    if not match:
        raise ValueError(f"size {value!r} is not WIDTHxHEIGHT (e.g. 64x64)")
    return int(match[1]), int(match[2])


@attrs.frozen(eq=False)
class XYZPlot:
    """A rendered plot.

    Attributes:
        grid: every Z grid side by side (the only grid when there is no Z axis).
        grids: one labelled grid per Z value.
        result: every cell's image with its own infotext, in x-fastest, then y, then z order.
        axes: the axes, X first.
    """

    grid: Image.Image
    grids: list[Image.Image]
    result: GenerationResult
    axes: tuple[Axis, ...]


def _cell_fields(axes: Sequence[Axis], index: Sequence[int], prompt: str, fields: dict) -> dict:
    """The request fields of one cell: the base fields with each axis's value applied."""
    out = {**fields, "prompt": prompt}
    for axis, i in zip(axes, index):
        value = axis.values[i]
        if axis.field == "size":
            out["width"], out["height"] = value
        elif axis.field == PROMPT_SR:
            search = axis.values[0]
            out["prompt"] = out["prompt"].replace(search, value)
            if out.get("negative_prompt"):
                out["negative_prompt"] = out["negative_prompt"].replace(search, value)
        elif axis.field not in PIPELINE_AXES:  # those pick the pipeline
            out[axis.field] = value
    return out


def _typed(pipe: Any, axis: Axis) -> Axis:
    """``axis`` with the text values of a recipe-bound numeric field (``hr_scale``, a
    ControlNet's ``control_weight`` ...) read as the numbers its node parameter takes,
    ranges expanded."""
    if axis.field in REQUEST_FIELDS or axis.field in SPECIAL_AXES:
        return axis
    kind = getattr(pipe, "field_type", lambda _: None)(axis.field)
    if isinstance(kind, tuple):
        kind = float if float in kind else None
    if kind not in (int, float) or not all(isinstance(v, str) for v in axis.values):
        return axis
    try:
        values = parse_values(",".join(axis.values), kind)
    except ValueError as exc:
        raise XYZError("xyz", f"axis {axis.field!r}: {exc}; give numbers or a range") from None
    return Axis(axis.field, tuple(values))


def _check_axes(axes: Sequence[Axis], prompt: str) -> None:
    if not 1 <= len(axes) <= 3:
        raise XYZError("xyz", f"give 1 to 3 axes (X, Y, Z), got {len(axes)}")
    fields = [a.field for a in axes]
    if len(set(fields)) != len(fields):
        raise XYZError("xyz", f"an axis field appears twice: {', '.join(fields)}")
    for axis in axes:
        if axis.field == PROMPT_SR and axis.values[0] not in prompt:
            raise XYZError(
                "xyz",
                f"prompt_sr: the search text {axis.values[0]!r} is not in the prompt; "
                "the first value is what each later value replaces",
            )
    cells = math.prod(len(a.values) for a in axes)
    if cells > MAX_CELLS:
        raise XYZError("xyz", f"{cells} cells; the limit is {MAX_CELLS}: use fewer values")


def xyz_plot(
    pipe: Any,
    prompt: str,
    axes: Sequence[Axis | str],
    *,
    pipeline_for: Callable[[str, str], Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_cell: Callable[[int, int, GenerationResult], None] | None = None,
    **fields: Any,
) -> XYZPlot:
    """Render every cell of ``axes`` (X, then optional Y and Z) and the labelled grids.

    Args:
        pipe: the pipeline cells run on (a :class:`~t2i.engine.Pipeline`).
        axes: :class:`Axis` objects or ``"FIELD=VALUES"`` strings.
        pipeline_for: ``pipeline_for(kind, value) -> Pipeline`` for the
            :data:`PIPELINE_AXES` (kind ``"recipe"``, ``"checkpoint"`` or ``"vae"``: a build
            option of ``pipe``'s recipe); default: built with
            :meth:`~t2i.engine.Engine.build` on ``pipe``'s plugins.
        on_cell: ``on_cell(i, total, result)`` after each cell.
        fields: the request fields every cell shares (seed, steps, ...). ``seed=-1`` is
            drawn once, so every cell shares it unless the seed is an axis.

    Raises:
        XYZError: a bad axis, before any image is made; a cell's own request errors raise
            :class:`~t2i.request.RequestError` naming the field.
    """
    axes = tuple(_typed(pipe, a if isinstance(a, Axis) else Axis.parse(a)) for a in axes)
    _check_axes(axes, prompt)
    if fields.get("batch_size", 1) != 1 or fields.get("batch_count", 1) != 1:
        raise XYZError("batch_size", "an X/Y/Z plot renders one image per cell; leave it at 1")
    pipelines = _pipelines(pipe, axes, pipeline_for)
    base = pipe.make_request(prompt, **fields)
    fields = {**fields, "seed": base.resolved_seed()}
    shape = [len(a.values) for a in axes]
    total = math.prod(shape)
    cells = [_cell_fields(axes, _unravel(i, shape), prompt, fields) for i in range(total)]
    for i, cell in enumerate(cells):  # validate every cell before the first image
        cell_pipe = _pipe_of(pipe, pipelines, axes, _unravel(i, shape))
        cell_prompt = cell.pop("prompt")
        cell_pipe.make_request(cell_prompt, **cell)
        cell["prompt"] = cell_prompt
    images, seeds, prompts, infotexts, metadata = [], [], [], [], {}
    for i, cell in enumerate(cells):
        cell_pipe = _pipe_of(pipe, pipelines, axes, _unravel(i, shape))
        res = cell_pipe(progress=progress, **cell)
        images += res.images[:1]
        seeds += res.seeds[:1]
        prompts += res.prompts[:1]
        infotexts += res.infotexts[:1]
        metadata = res.metadata
        if on_cell is not None:
            on_cell(i + 1, total, res)
    grids = _grids(images, axes, shape)
    metadata = {**metadata, "xyz": [{"field": a.field, "values": list(a.values)} for a in axes]}
    result = GenerationResult(images, seeds, prompts, infotexts, metadata)
    return XYZPlot(_side_by_side(grids, axes), grids, result, axes)


def _unravel(i: int, shape: Sequence[int]) -> tuple[int, ...]:
    """Cell index -> (x, y, z) indices, X fastest."""
    out = []
    for n in shape:
        out.append(i % n)
        i //= n
    return tuple(out)


def _pipelines(pipe: Any, axes: Sequence[Axis], pipeline_for: Callable | None) -> dict:
    """The pipeline of every recipe / checkpoint / VAE value, built once each."""
    wanted = [a for a in axes if a.field in PIPELINE_AXES]
    if not wanted:
        return {}
    if pipeline_for is None:
        from t2i.engine import Engine

        def pipeline_for(kind: str, value: str) -> Any:
            if kind == "recipe":
                return Engine.build(value, plugins=pipe.manager, device=pipe.device)
            return Engine.build(
                pipe.recipe.name, plugins=pipe.manager, device=pipe.device, **{kind: value}
            )

    if len(wanted) > 1:
        raise XYZError("xyz", "plot one of recipe, checkpoint and vae, on one axis")
    axis = wanted[0]
    return {(axis.field, v): pipeline_for(axis.field, v) for v in axis.values}


def _pipe_of(pipe: Any, pipelines: dict, axes: Sequence[Axis], index: Sequence[int]) -> Any:
    for axis, i in zip(axes, index):
        if axis.field in PIPELINE_AXES:
            return pipelines[(axis.field, axis.values[i])]
    return pipe


def _text_width(draw: ImageDraw.ImageDraw, text: str) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text)
    return right - left


def _grids(images: list[Image.Image], axes: Sequence[Axis], shape: Sequence[int]) -> list:
    """One grid per Z value: X labels on top, Y labels on the left (cells may differ in
    size, as a size axis makes them: each column and row takes its largest cell)."""
    nx = shape[0]
    ny = shape[1] if len(shape) > 1 else 1
    nz = shape[2] if len(shape) > 2 else 1
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x_labels = [axes[0].label(v) for v in axes[0].values]
    y_labels = [axes[1].label(v) for v in axes[1].values] if len(axes) > 1 else [""]
    left = max(_text_width(probe, t) for t in y_labels) + 8 if len(axes) > 1 else 0
    top = 16
    grids = []
    for z in range(nz):
        cell = lambda x, y, z=z: images[x + nx * (y + ny * z)]  # noqa: E731
        widths = [max(cell(x, y).width for y in range(ny)) for x in range(nx)]
        heights = [max(cell(x, y).height for x in range(nx)) for y in range(ny)]
        grid = Image.new("RGB", (left + sum(widths), top + sum(heights)), "white")
        draw = ImageDraw.Draw(grid)
        for x in range(nx):
            x0 = left + sum(widths[:x])
            draw.text((x0 + 2, 2), _fit(probe, x_labels[x], widths[x]), fill="black")
            for y in range(ny):
                y0 = top + sum(heights[:y])
                grid.paste(cell(x, y), (x0, y0))
                if x == 0 and len(axes) > 1:
                    draw.text((2, y0 + heights[y] // 2 - 5), y_labels[y], fill="black")
        grids.append(grid)
    return grids


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """``text`` cut (with "...") to fit ``width`` pixels."""
    if _text_width(draw, text) <= width - 4:
        return text
    while len(text) > 1 and _text_width(draw, text + "...") > width - 4:
        text = text[:-1]
    return text + "..."


def _side_by_side(grids: list[Image.Image], axes: Sequence[Axis]) -> Image.Image:
    """The Z grids in a row, each under its Z label (the grid itself without a Z axis)."""
    if len(grids) == 1:
        return grids[0]
    top, gap = 16, 8
    width = sum(g.width for g in grids) + gap * (len(grids) - 1)
    out = Image.new("RGB", (width, top + max(g.height for g in grids)), "white")
    draw = ImageDraw.Draw(out)
    x = 0
    for grid, value in zip(grids, axes[2].values):
        draw.text((x + 2, 2), _fit(draw, axes[2].label(value), grid.width), fill="black")
        out.paste(grid, (x, top))
        x += grid.width + gap
    return out
