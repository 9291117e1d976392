"""The README's DreamBooth subject: a two-colour star the shapes models never saw.

``python -m t2i_dreambooth.example DIR`` writes 4 images of it (64 px): a large star, left
half pink, right half cyan, on white, with a little jitter of place, size and rotation.
Objects of the shapes benchmark have one colour, so the embedded ldm-shapes model cannot
draw this subject before fine-tuning.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def subject_images(folder: str | Path, n: int = 4) -> Path:
    """Write ``n`` images of the two-colour star into ``folder``; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(n):
        image = Image.new("RGB", (64, 64), "white")
        cx, cy = 32 + rng.uniform(-2, 2), 32 + rng.uniform(-2, 2)
        r, phase = 22 + rng.uniform(-1.5, 1.5), math.radians(-90 + rng.uniform(-8, 8))
        points = [
            (
                cx + (r if k % 2 == 0 else 0.45 * r) * math.cos(phase + k * math.pi / 5),
                cy + (r if k % 2 == 0 else 0.45 * r) * math.sin(phase + k * math.pi / 5),
            )
            for k in range(10)
        ]
        mask = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(mask).polygon(points, fill=255)
        halves = Image.new("RGB", (64, 64), (255, 110, 185))
        ImageDraw.Draw(halves).rectangle((int(cx), 0, 64, 64), fill=(0, 200, 215))
        image.paste(halves, (0, 0), mask)
        image.save(folder / f"{i}.png")
    return folder


if __name__ == "__main__":
    print(subject_images(sys.argv[1] if len(sys.argv) > 1 else "star"))
