"""The shapes benchmark: procedural scenes, captions, dataset, judge, metrics and evaluation.

Why it exists: no pretrained text-to-image weights can be downloaded, yet every model family
must show that it draws what the text asks. Coloured shapes of given sizes at given positions,
alone or in pairs with a spatial relation, are rendered procedurally; a small CNN *judge* reads
the attributes back (GenEval's idea, in a domain we control). See DESIGN.md, "The shapes
benchmark".

Modules: :mod:`~t2i.shapes.vocabulary`, :mod:`~t2i.shapes.scene`, :mod:`~t2i.shapes.render`,
:mod:`~t2i.shapes.captions`, :mod:`~t2i.shapes.splits`, :mod:`~t2i.shapes.dataset`,
:mod:`~t2i.shapes.judge`, :mod:`~t2i.shapes.augment`, :mod:`~t2i.shapes.metrics`,
:mod:`~t2i.shapes.evaluate`, :mod:`~t2i.shapes.train_judge`.
"""

from __future__ import annotations

from t2i.shapes.captions import Caption, CaptionParseError, make_caption, parse_caption
from t2i.shapes.render import render
from t2i.shapes.scene import Scene, ShapeSpec
from t2i.shapes.splits import SPLITS, is_heldout, sample_scene

__all__ = [
    "SPLITS",
    "Caption",
    "CaptionParseError",
    "Scene",
    "ShapeSpec",
    "ShapesDataset",
    "collate_shapes",
    "evaluate",
    "evaluate_recipe",
    "is_heldout",
    "load_judge",
    "make_caption",
    "parse_caption",
    "render",
    "sample_scene",
]

_LAZY = {
    "ShapesDataset": "t2i.shapes.dataset",
    "collate_shapes": "t2i.shapes.dataset",
    "load_judge": "t2i.shapes.judge",
    "evaluate": "t2i.shapes.evaluate",
    "evaluate_recipe": "t2i.shapes.evaluate",
}


def __getattr__(name: str):  # torch-heavy modules load on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
