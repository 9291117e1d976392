"""Validation grids during a run: the validation prompts rendered with the weights as they are.

The base recipe's graph runs through a second pipeline whose executor gets the components
being trained from :class:`LiveRegistry` (nothing is cached, nothing reloaded), so a grid
shows exactly the model at that step. One row per prompt, ``--num-validation-images``
seeds per row, written to ``validation/step-NNNNNN.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from t2i.engine import Pipeline
from t2i.files import write_atomically
from t2i.graph.executor import Executor


class LiveRegistry:
    """The component registry, except that ``create`` of the given kinds returns the given
    objects (the components a run trains) instead of loading them again."""

    def __init__(self, base: Any, live: dict[str, Any]) -> None:
        self.base, self.live = base, live

    def create(self, kind: str, name: str, **options: Any) -> Any:
        if kind in self.live:
            return self.live[kind]
        return self.base.create(kind, name, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Images in rows (all of one size) as one image."""
    w, h = rows[0][0].size
    out = Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)), "white")
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            out.paste(image, (x * w, y * h))
    return out


def render(
    pipe: Any,
    live: LiveRegistry,
    prompts,
    *,
    seed: int,
    count: int,
    size: int,
    device: torch.device,
) -> list[list[Image.Image]]:
    """``count`` images per prompt from the live components, on ``device``."""
    view = Pipeline(pipe.recipe, pipe.manager, defaults=pipe.defaults, device=device)
    view.executor = Executor(pipe.manager.registry, live, cache_size=0, device=view.device)
    return [
        view(prompt, seed=seed, batch_size=count, width=size, height=size).images
        for prompt in prompts
    ]


def validation_grid(
    pipe: Any, live: LiveRegistry, model: Any, options: Any, step: int, folder: Path
) -> Path:
    """Render the validation prompts now and write ``folder/step-NNNNNN.png``."""
    size = int(model.record["resolution"])
    was_training = model.trained.training
    model.trained.eval()
    try:
        with torch.no_grad():
            rows = render(
                pipe,
                live,
                options.validation_prompts,
                seed=options.seed,
                count=options.num_validation_images,
                size=size,
                device=model.instance_latents.device,
            )
    finally:
        model.trained.train(was_training)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:06d}.png"
    image = grid(rows)
    write_atomically(path, lambda f: image.save(f, format="PNG"))
    return path
