"""Prompt matrix rendering: every combination of ``a|b|c`` with one seed, as a labelled grid.

The web UI's "Prompt matrix" script: the first part is always kept, the n optional parts
are switched on and off (2**n images, same seed), and the grid is labelled by the parts
each image includes.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw

from t2i.prompts import expand_prompt_matrix
from t2i.result import GenerationResult


def prompt_matrix_grid(
    pipe: Any, prompt: str, **fields: Any
) -> tuple[Image.Image, GenerationResult]:
    """Render every combination of ``prompt``'s ``|`` parts with the same seed.

    Returns the labelled grid and a :class:`GenerationResult` holding each image with its
    own infotext. ``fields`` are the usual request fields (``seed``, ``steps`` ...);
    ``batch_size`` must be 1 (one image per combination).
    """
    progress = fields.pop("progress", None)
    if fields.get("batch_size", 1) != 1 or fields.get("batch_count", 1) != 1:
        raise ValueError(
            "batch_size/batch_count: a prompt matrix renders one image per "
            "combination; leave them at 1"
        )
    combos = expand_prompt_matrix(prompt)
    request = pipe.make_request(combos[0][0], **fields)
    seed = request.resolved_seed()
    images, seeds, prompts, infotexts, labels = [], [], [], [], []
    metadata: dict[str, Any] = {}
    for text, parts in combos:
        res = pipe(text, progress=progress, **{**fields, "seed": seed})
        images += res.images
        seeds += res.seeds
        prompts += res.prompts
        infotexts += res.infotexts
        labels.append(", ".join(p for p in parts if p) or "(base)")
        metadata = res.metadata
    metadata = {**metadata, "prompt_matrix": [t for t, _ in combos]}
    return labelled_grid(images, labels), GenerationResult(
        images, seeds, prompts, infotexts, metadata
    )


def labelled_grid(
    images: list[Image.Image],
    labels: list[str],
    *,
    columns: int | None = None,
    label_height: int = 14,
) -> Image.Image:
    """Tile ``images`` in a grid (about square), each with its label above it."""
    n = len(images)
    columns = columns or max(1, round(n**0.5))
    rows = (n + columns - 1) // columns
    w, h = images[0].size
    cell_h = h + label_height
    grid = Image.new("RGB", (columns * w, rows * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, label) in enumerate(zip(images, labels)):
        x, y = (i % columns) * w, (i // columns) * cell_h
        draw.text((x + 2, y + 1), label[: max(4, w // 6)], fill="black")
        grid.paste(image, (x, y + label_height))
    return grid
