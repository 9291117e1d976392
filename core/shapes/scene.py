"""Scene records: what a shapes image shows (or what a caption states).

A :class:`Scene` is the ground truth of one render, and also the record of the attributes a
caption states, where an attribute the caption leaves out is ``None``.

Two-object scenes read ``objects[0] <relation> objects[1]`` ("a red circle left of a blue
square"); each object's ``position`` is then the slot it occupies (left/right or top/bottom).
"""

from __future__ import annotations

from typing import Any

import attrs

from t2i.shapes import vocabulary as V


def _member(allowed: tuple[str, ...], optional: bool):
    def check(_inst, attribute, value):
        if value is None and optional:
            return
        if value not in allowed:
            raise ValueError(
                f"{attribute.name}={value!r} is not in the shapes vocabulary; "
                f"use one of {list(allowed)}"
            )

    return check


@attrs.frozen
class ShapeSpec:
    """One object: shape, colour, size and position (``None`` = not stated, in caption records).

    Attributes:
        shape: one of :data:`t2i.shapes.vocabulary.SHAPES`.
        color: one of :data:`t2i.shapes.vocabulary.COLOR_NAMES`.
        size: ``"small"`` or ``"large"``, or None.
        position: one of :data:`t2i.shapes.vocabulary.POSITION_NAMES`, or None.
    """

    shape: str | None = attrs.field(validator=_member(V.SHAPES, True))
    color: str | None = attrs.field(validator=_member(V.COLOR_NAMES, True))
    size: str | None = attrs.field(default=None, validator=_member(V.SIZES, True))
    position: str | None = attrs.field(default=None, validator=_member(V.POSITION_NAMES, True))

    def to_dict(self) -> dict[str, str | None]:
        return attrs.asdict(self)


def _objects_valid(inst: Scene, _attribute, value) -> None:
    if len(value) not in (1, 2):
        raise ValueError(f"a scene holds 1 or 2 objects, got {len(value)}")
    if len(value) == 2 and inst.relation is None:
        raise ValueError("a two-object scene needs a relation: one of " + str(list(V.RELATIONS)))
    if len(value) == 1 and inst.relation is not None:
        raise ValueError("a one-object scene has no relation; pass relation=None")


@attrs.frozen
class Scene:
    """A shapes scene: one object, or two objects in a spatial relation, on a background.

    Attributes:
        objects: one or two :class:`ShapeSpec`; for a pair, ``objects[0] <relation> objects[1]``.
        relation: None for one object, else one of :data:`t2i.shapes.vocabulary.RELATIONS`.
        background: one of :data:`t2i.shapes.vocabulary.BACKGROUND_NAMES` (None = not stated).
    """

    objects: tuple[ShapeSpec, ...] = attrs.field(converter=tuple, validator=_objects_valid)
    relation: str | None = attrs.field(default=None, validator=_member(V.RELATIONS, True))
    background: str | None = attrs.field(default=None, validator=_member(V.BACKGROUND_NAMES, True))

    @property
    def kind(self) -> str:
        """``"single"`` or ``"pair"``."""
        return "single" if len(self.objects) == 1 else "pair"

    @property
    def arrangement(self) -> str | None:
        """``"horizontal"``/``"vertical"`` for pairs, None for single objects."""
        return None if self.relation is None else V.RELATION_ARRANGEMENT[self.relation]

    def slots(self) -> tuple[ShapeSpec, ShapeSpec]:
        """The pair's objects in reading order: (left or top object, right or bottom object)."""
        if self.relation is None:
            raise ValueError("slots() is defined for two-object scenes only")
        a, b = self.objects
        return (a, b) if self.relation in ("left of", "above") else (b, a)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record (``kind``, ``objects``, ``relation``, ``background``)."""
        return {
            "kind": self.kind,
            "objects": [o.to_dict() for o in self.objects],
            "relation": self.relation,
            "background": self.background,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Scene:
        """Inverse of :meth:`to_dict` (``kind`` is derived, so it is ignored)."""
        return cls(
            objects=tuple(ShapeSpec(**o) for o in record["objects"]),
            relation=record.get("relation"),
            background=record.get("background"),
        )
