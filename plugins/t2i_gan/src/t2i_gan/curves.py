"""Training curves of ``t2i train gan``: ``curves.json`` and ``curves.png`` in the run folder.

GAN training is judged by its curves: the discriminator's and generator's losses, the MA-GP
value, and the shapes judge's alignment on a fixed prompt set every N steps. The JSON is
appended to across resumed runs; the PNG (drawn with PIL, three panels) is redrawn each time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

PANELS = (
    ("losses", ("d_loss", "g_loss")),
    ("MA-GP", ("gp",)),
    ("judge alignment", ("single", "pair")),
)
COLOURS = {"d_loss": "red", "g_loss": "blue", "gp": "purple", "single": "green", "pair": "orange"}


class Curves:
    """Rows ``{"step": n, name: value ...}`` kept in ``folder/curves.json``."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / "curves.json"
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            self.rows = json.loads(self.path.read_text())

    def add(self, step: int, **values: float) -> None:
        self.rows.append({"step": int(step), **{k: float(v) for k, v in values.items()}})

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(r["step"], r[name]) for r in self.rows if name in r and math.isfinite(r[name])]

    def write(self) -> Path:
        """Write the JSON and redraw ``curves.png``; returns the PNG's path."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.rows))
        png = self.path.with_suffix(".png")
        plot(self, png)
        return png


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], curves: Curves, panel):
    title, names = panel
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline="black")
    points = [p for n in names for p in curves.series(n)]
    draw.text((x0 + 4, y0 + 2), title + ": " + ", ".join(names), fill="black")
    if not points:
        return
    s0, s1 = min(p[0] for p in points), max(p[0] for p in points)
    v0, v1 = min(p[1] for p in points), max(p[1] for p in points)
    v0, v1 = (v0 - 0.5, v1 + 0.5) if v1 == v0 else (v0, v1)
    draw.text((x0 + 4, y1 - 12), f"{v0:.3g} .. {v1:.3g}; steps {s0}..{s1}", fill="gray")

    def at(step: int, value: float) -> tuple[float, float]:
        fx = (step - s0) / max(s1 - s0, 1)
        fy = (value - v0) / (v1 - v0)
        return x0 + 8 + fx * (x1 - x0 - 16), y1 - 16 - fy * (y1 - y0 - 32)

    for name in names:
        line = [at(s, v) for s, v in curves.series(name)]
        if len(line) > 1:
            draw.line(line, fill=COLOURS.get(name, "black"), width=2)
        elif line:
            draw.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2])


def plot(curves: Curves, path: Path, width: int = 900, height: int = 240) -> None:
    """Three panels side by side: losses, MA-GP, alignment."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    w = width // len(PANELS)
    for i, panel in enumerate(PANELS):
        _panel(draw, (i * w + 2, 2, (i + 1) * w - 2, height - 2), curves, panel)
    image.save(path)
