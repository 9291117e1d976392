"""Captions of shapes scenes, with the record of what each caption states, and a parser back.

:func:`make_caption` draws one caption of a complete :class:`~t2i.shapes.scene.Scene` from a
set of templates and synonyms. Some attributes are left out at random (an object's size, the
background), so prompts vary; the returned :class:`Caption` keeps beside the text a ``stated``
scene in which every attribute the text does not say is ``None``. A single object's position and
a pair's relation are always stated.

:func:`parse_caption` reads any caption these templates make back into its ``stated`` record
(``parse_caption(c.text) == c.stated``), which lets an "oracle" generator render a prompt.
"""

from __future__ import annotations

import re

import attrs
import numpy as np

from t2i.shapes import vocabulary as V
from t2i.shapes.scene import Scene, ShapeSpec

SIZE_STATED_SINGLE = 0.6
SIZE_STATED_PAIR = 0.35
BACKGROUND_STATED = 0.3

SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in V.COLOR_NAMES} | {
    "purple": ("purple", "violet")
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {s: (s,) for s in V.SHAPES} | {
    "circle": ("circle", "disk"),
    "cross": ("cross", "plus sign"),
    "diamond": ("diamond", "rhombus"),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {"white": ("white",), "black": ("black",),
                                                "gray": ("gray", "grey")}  # fmt: skip
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "on the left side", "in the left part of the image"),
    "right": (
        "on the right",
        "at the right",
        "on the right side",
        "in the right part of the image",
    ),
    "top": ("at the top", "near the top", "in the upper part of the image"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part of the image"),
    "center": ("in the center", "in the middle", "at the centre"),
}
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
BACKGROUND_TEMPLATES = (" on a {} background", " against a {} background", ", {} background")
SINGLE_TEMPLATES = ("{obj} {pos}", "{Pos}, {obj}", "an image of {obj} {pos}", "{bare} {pos}")
PAIR_TEMPLATES = ("{a} {rel} {b}", "a picture of {a} {rel} {b}", "{bare_a} {rel} {b}")


class CaptionParseError(ValueError):
    """A caption does not follow the shapes grammar; the message names the missing part."""


@attrs.frozen
class Caption:
    """A caption and the attributes it states.

    Attributes:
        text: the caption.
        stated: the scene record with every attribute the text does not state set to None.
    """

    text: str
    stated: Scene


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(spec: ShapeSpec, rng: np.random.Generator) -> str:
    words = []
    if spec.size is not None:
        words.append(_pick(rng, SIZE_WORDS[spec.size]))
    words.append(_pick(rng, COLOR_WORDS[spec.color]))
    words.append(_pick(rng, SHAPE_WORDS[spec.shape]))
    return " ".join(words)


def make_caption(scene: Scene, rng: np.random.Generator) -> Caption:
    """Draw a caption of a complete ``scene``; see the module docstring for what is stated.

    Args:
        scene: a complete scene (as rendered).
        rng: the generator that picks the template, synonyms and omissions.
    """
    background = scene.background if rng.random() < BACKGROUND_STATED else None
    if scene.kind == "single":
        obj = scene.objects[0]
        size = obj.size if rng.random() < SIZE_STATED_SINGLE else None
        stated_obj = ShapeSpec(obj.shape, obj.color, size, obj.position)
        noun = _noun_phrase(stated_obj, rng)
        pos = _pick(rng, POSITION_PHRASES[obj.position])
        text = _pick(rng, SINGLE_TEMPLATES).format(
            obj=_article(noun), bare=noun, pos=pos, Pos=pos[0].upper() + pos[1:]
        )
        stated = Scene((stated_obj,), None, background)
    else:
        stated_objs = tuple(
            ShapeSpec(o.shape, o.color, o.size if rng.random() < SIZE_STATED_PAIR else None)
            for o in scene.objects
        )
        a, b = (_noun_phrase(o, rng) for o in stated_objs)
        text = _pick(rng, PAIR_TEMPLATES).format(
            a=_article(a), b=_article(b), bare_a=a, rel=_pick(rng, RELATION_PHRASES[scene.relation])
        )
        stated = Scene(stated_objs, scene.relation, background)
    if background is not None:
        text += _pick(rng, BACKGROUND_TEMPLATES).format(_pick(rng, BACKGROUND_WORDS[background]))
    return Caption(text=text, stated=stated)


def _alternation(table: dict[str, tuple[str, ...]]) -> tuple[str, dict[str, str]]:
    lookup = {phrase: key for key, phrases in table.items() for phrase in phrases}
    ordered = sorted(lookup, key=len, reverse=True)  # longest first: "left of" before "left"
    return "|".join(re.escape(p) for p in ordered), lookup


_BG_ALT, _BG_LOOKUP = _alternation(BACKGROUND_WORDS)
_BG_RE = re.compile(rf"(?:,\s*|\s+(?:on|against)\s+an?\s+)({_BG_ALT})\s+background\s*$")
_REL_ALT, _REL_LOOKUP = _alternation(RELATION_PHRASES)
_REL_RE = re.compile(rf"\b({_REL_ALT})\b")
_POS_ALT, _POS_LOOKUP = _alternation(POSITION_PHRASES)
_POS_RE = re.compile(rf"\b({_POS_ALT})\b")
_SIZE_ALT, _SIZE_LOOKUP = _alternation(SIZE_WORDS)
_COLOR_ALT, _COLOR_LOOKUP = _alternation(COLOR_WORDS)
_SHAPE_ALT, _SHAPE_LOOKUP = _alternation(SHAPE_WORDS)
_OBJECT_RE = re.compile(
    rf"(?:(?P<size>{_SIZE_ALT})\s+)?(?P<color>{_COLOR_ALT})\s+(?P<shape>{_SHAPE_ALT})\b"
)


def _parse_object(text: str, caption: str) -> ShapeSpec:
    matches = list(_OBJECT_RE.finditer(text))
    if len(matches) != 1:
        raise CaptionParseError(
            f"expected one '[size] colour shape' phrase in {text!r} (caption {caption!r}), "
            f"found {len(matches)}; colours: {list(_COLOR_LOOKUP)}, shapes: {list(_SHAPE_LOOKUP)}"
        )
    m = matches[0]
    size = _SIZE_LOOKUP[m["size"]] if m["size"] else None
    return ShapeSpec(_SHAPE_LOOKUP[m["shape"]], _COLOR_LOOKUP[m["color"]], size)


def parse_caption(text: str) -> Scene:
    """Read the attributes a caption states (``None`` where it is silent).

    Args:
        text: a caption in the shapes grammar (as :func:`make_caption` writes them; case and
            surrounding spaces do not matter).

    Returns:
        The stated-attribute :class:`Scene`.

    Raises:
        CaptionParseError: the caption names no object, more than two, or a single object
            without a position.
    """
    caption = text
    text = " ".join(text.lower().strip().rstrip(".").split())
    background = None
    bg = _BG_RE.search(text)
    if bg:
        background = _BG_LOOKUP[bg[1]]
        text = text[: bg.start()]
    rel = _REL_RE.search(text)
    if rel:
        a = _parse_object(text[: rel.start()], caption)
        b = _parse_object(text[rel.end() :], caption)
        return Scene((a, b), _REL_LOOKUP[rel[1]], background)
    pos = _POS_RE.search(text)
    if not pos:
        raise CaptionParseError(
            f"caption {caption!r} names neither a relation ({list(_REL_LOOKUP)}) nor a position "
            f"({list(_POS_LOOKUP)})"
        )
    obj = _parse_object(text[: pos.start()] + " " + text[pos.end() :], caption)
    position = _POS_LOOKUP[pos[1]]
    return Scene((ShapeSpec(obj.shape, obj.color, obj.size, position),), None, background)
