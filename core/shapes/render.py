"""Procedural, anti-aliased renderer of shapes scenes.

A scene is drawn with Pillow at ``SUPERSAMPLE`` times the target size and reduced with a box
filter, so each output pixel is the average coverage of its 4x4 sub-pixels (anti-aliasing by
supersampling). All randomness (position, size, rotation and colour jitter) comes from one
``numpy`` generator seeded by ``seed``: the same (scene, size, seed) gives the same pixels.

Jitter is kept small enough that attributes stay unambiguous: a single object's centre moves at
most 0.025 of the side from its nominal position (positions are 0.25 apart), its size at most
8% (small and large differ by 67%), and two objects of a pair never overlap.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from t2i.shapes import vocabulary as V
from t2i.shapes.scene import Scene, ShapeSpec

__all__ = ["SUPERSAMPLE", "SUPPORTED_SIZES", "Scene", "ShapeSpec", "render", "render_array"]

SUPERSAMPLE = 4
SUPPORTED_SIZES = (32, 64, 128)

_POSITION_JITTER = 0.025
_SIZE_JITTER = 0.08
_ROTATION_JITTER_DEG = 12.0
_COLOR_JITTER = 8
_BACKGROUND_JITTER = 6
# Pair layout: slot centres along the arrangement axis, jitter along and across it.
_PAIR_CENTRES = (0.26, 0.74)
_PAIR_ALONG_JITTER = 0.02
_PAIR_ACROSS_JITTER = 0.06


def _regular(n: int, radius: float, phase_deg: float) -> list[tuple[float, float]]:
    return [
        (
            radius * math.cos(math.radians(phase_deg + 360.0 * k / n)),
            radius * math.sin(math.radians(phase_deg + 360.0 * k / n)),
        )
        for k in range(n)
    ]


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.45) -> list[tuple[float, float]]:
    verts = []
    for k in range(2 * points):
        r = outer if k % 2 == 0 else inner
        a = math.radians(-90.0 + 180.0 * k / points)
        verts.append((r * math.cos(a), r * math.sin(a)))
    return verts


def _heart(n: int = 48) -> list[tuple[float, float]]:
    # The classic parametric heart curve, flipped so the point is at the bottom.
    pts = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x, y))
    return pts


def _cross(arm: float = 0.34) -> list[tuple[float, float]]:
    a, r = arm, 1.0
    return [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r),
            (-a, a), (-r, a), (-r, -a), (-a, -a)]  # fmt: skip


def _normalise(poly: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Centre a polygon's bounding box on the origin and scale its larger half-extent to 1."""
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    half = max(max(xs) - min(xs), max(ys) - min(ys)) / 2
    return [((x - cx) / half, (y - cy) / half) for x, y in poly]


#: Unit polygons (bounding box centred, half-extent 1) of every shape but the circle.
_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": _normalise(_regular(3, 1.0, -90.0)),
    "star": _normalise(_star()),
    "hexagon": _regular(6, 1.0, 0.0),
    "cross": _cross(),
    "heart": _normalise(_heart()),
    "diamond": [(0.0, -1.0), (0.68, 0.0), (0.0, 1.0), (-0.68, 0.0)],
}
assert set(_POLYGONS) | {"circle"} == set(V.SHAPES)


def _jitter_rgb(rgb: tuple[int, int, int], amount: int, rng: np.random.Generator) -> tuple:
    delta = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(rgb, delta))


def _draw_object(
    draw: ImageDraw.ImageDraw,
    spec: ShapeSpec,
    centre: tuple[float, float],
    canvas: int,
    rng: np.random.Generator,
) -> None:
    radius = 0.5 * V.SIZE_FRACTION[spec.size] * canvas * (1 + rng.uniform(-1, 1) * _SIZE_JITTER)
    angle = math.radians(rng.uniform(-1, 1) * _ROTATION_JITTER_DEG)
    fill = _jitter_rgb(V.COLORS[spec.color], _COLOR_JITTER, rng)
    cx, cy = centre[0] * canvas, centre[1] * canvas
    if spec.shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
        return
    cos, sin = math.cos(angle), math.sin(angle)
    pts = [
        (cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos))
        for x, y in _POLYGONS[spec.shape]
    ]
    draw.polygon(pts, fill=fill)


def _check_complete(scene: Scene) -> None:
    missing = [
        f"objects[{i}].{name}"
        for i, o in enumerate(scene.objects)
        for name in ("shape", "color", "size")
        if getattr(o, name) is None
    ]
    if scene.background is None:
        missing.append("background")
    if scene.kind == "single" and scene.objects[0].position is None:
        missing.append("objects[0].position")
    if missing:
        raise ValueError(
            f"cannot render a scene with unset attributes {missing}; "
            "render full scenes (e.g. from t2i.shapes.splits.sample_scene), not caption records"
        )


def _centres(scene: Scene, rng: np.random.Generator) -> list[tuple[float, float]]:
    if scene.kind == "single":
        x, y = V.POSITIONS[scene.objects[0].position]
        dx, dy = rng.uniform(-_POSITION_JITTER, _POSITION_JITTER, size=2)
        return [(x + dx, y + dy)]
    along = [c + rng.uniform(-_PAIR_ALONG_JITTER, _PAIR_ALONG_JITTER) for c in _PAIR_CENTRES]
    across = [0.5 + rng.uniform(-_PAIR_ACROSS_JITTER, _PAIR_ACROSS_JITTER) for _ in range(2)]
    if scene.arrangement == "horizontal":
        slot_centres = [(along[0], across[0]), (along[1], across[1])]
    else:
        slot_centres = [(across[0], along[0]), (across[1], along[1])]
    # objects[0] is the first slot for "left of"/"above", the second for "right of"/"below".
    if scene.relation in ("left of", "above"):
        return slot_centres
    return slot_centres[::-1]


def render(scene: Scene, size: int = 64, seed: int = 0) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` x ``size`` pixels.

    Args:
        scene: a complete scene (every attribute set; a pair's positions may be None, they follow
            from the relation).
        size: output side in pixels; 32, 64 and 128 are the supported benchmark sizes, any side
            from 16 to 512 works.
        seed: seeds the jitter of position, size, rotation and colour.

    Returns:
        A ``PIL.Image.Image`` in mode RGB.
    """
    if not isinstance(size, int) or not 16 <= size <= 512:
        raise ValueError(
            f"size must be an int in [16, 512] (benchmark sizes 32/64/128), got {size}"
        )
    _check_complete(scene)
    rng = np.random.default_rng(seed)
    canvas = size * SUPERSAMPLE
    grey_shift = int(rng.integers(-_BACKGROUND_JITTER, _BACKGROUND_JITTER + 1))  # no colour tint
    background = tuple(
        int(np.clip(c + grey_shift, 0, 255)) for c in V.BACKGROUNDS[scene.background]
    )
    img = Image.new("RGB", (canvas, canvas), background)
    draw = ImageDraw.Draw(img)
    for spec, centre in zip(scene.objects, _centres(scene, rng)):
        _draw_object(draw, spec, centre, canvas, rng)
    return img.resize((size, size), Image.Resampling.BOX)


def render_array(scene: Scene, size: int = 64, seed: int = 0) -> np.ndarray:
    """:func:`render` as a ``(size, size, 3)`` uint8 array."""
    return np.asarray(render(scene, size, seed))
