"""The closed vocabulary of the shapes benchmark: shapes, colours, sizes, positions, relations.

Every attribute value is a lower-case string from one of the tuples below; the index of a value
in its tuple is its class id for the judge (:mod:`t2i.shapes.judge`). Changing the order of a
tuple changes the judge's label space: bump ``VOCABULARY_VERSION`` and retrain the judge.

Colours were chosen to be far apart in RGB and in hue, and none is close to a background
(white, black, mid grey): every object colour has a saturation above 0.6.
"""

from __future__ import annotations

VOCABULARY_VERSION = "shapes-vocab-v1"

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "cross",
    "heart",
    "diamond",
)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 135, 0),
    "yellow": (245, 225, 20),
    "green": (30, 165, 50),
    "cyan": (0, 200, 215),
    "blue": (30, 60, 225),
    "purple": (135, 40, 200),
    "pink": (255, 110, 185),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)

SIZES: tuple[str, ...] = ("small", "large")

#: Positions of a single object, as (x, y) centres in units of the image side (y grows down).
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
POSITION_NAMES: tuple[str, ...] = tuple(POSITIONS)

#: Spatial relations of a two-object scene: ``objects[0] <relation> objects[1]``.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

#: How the two objects of a pair are laid out; the judge reads slot 1 (left / top object) and
#: slot 2 (right / bottom object).
ARRANGEMENTS: tuple[str, ...] = ("horizontal", "vertical")

RELATION_ARRANGEMENT: dict[str, str] = {
    "left of": "horizontal",
    "right of": "horizontal",
    "above": "vertical",
    "below": "vertical",
}

#: Object diameter (bounding size) as a share of the image side.
SIZE_FRACTION: dict[str, float] = {"small": 0.24, "large": 0.40}

#: Position names of the two slots of each arrangement.
SLOT_POSITIONS: dict[str, tuple[str, str]] = {
    "horizontal": ("left", "right"),
    "vertical": ("top", "bottom"),
}
