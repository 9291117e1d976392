"""The "oracle" generator: renders the prompt itself, the ceiling of the shapes benchmark.

It parses the caption (:func:`~t2i.shapes.captions.parse_caption`), fills the attributes the
caption leaves out from the seed (:func:`~t2i.shapes.splits.complete_scene`) and renders the
scene. As a plugin (this module holds the hook implementations) it registers the node type
``Shapes.RenderPrompt`` and the recipe ``shapes-oracle``, so ``t2i eval shapes-oracle`` scores
the renderer through the same engine path as a model. Image ``i`` of a batch uses seed
``seed + i``, as the engine's other recipes do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from t2i.graph.node import REQUIRED, NodeType, Param, Port
from t2i.payloads import Image
from t2i.registry import hookimpl
from t2i.shapes.captions import parse_caption
from t2i.shapes.render import render
from t2i.shapes.splits import complete_scene

RECIPE_NAME = "shapes-oracle"
NODE_NAME = "Shapes.RenderPrompt"


def oracle_images(prompt: str, seeds: list[int], size: int = 64) -> list:
    """Render ``prompt`` once per seed (a ``generate`` function for :func:`evaluate`)."""
    stated = parse_caption(prompt)
    return [render(complete_scene(stated, np.random.default_rng(s)), size, seed=s) for s in seeds]


class RenderPrompt(NodeType):
    """Prompt -> IMAGE by parsing the caption and rendering it (no model)."""

    type_name = NODE_NAME
    description = "Render a shapes caption with the procedural renderer (benchmark ceiling)."
    outputs = (Port("image", "IMAGE"),)
    params = (
        Param("prompt", str, REQUIRED),
        Param("seed", int, 0),
        Param("batch_size", int, 1),
        Param("width", int, 64),
        Param("height", int, 64),
    )

    def execute(self, ctx: Any, *, prompt, seed, batch_size, width, height) -> dict[str, Any]:
        if width != height:
            raise ValueError(f"the shapes renderer draws square images; got {width}x{height}")
        pils = oracle_images(prompt, [seed + i for i in range(batch_size)], width)
        return {"image": Image.from_pil(pils)}


def oracle_recipe() -> Any:
    """The ``shapes-oracle`` recipe: one ``Shapes.RenderPrompt`` node."""
    from t2i.graph.graph import Graph
    from t2i.recipe import Recipe

    g = Graph()
    g.add("render", NODE_NAME, prompt="")
    fields = ("prompt", "seed", "batch_size", "width", "height")
    return Recipe(
        graph=g,
        output=g["render"]["image"],
        bindings={f: ("render", f) for f in fields},
        defaults={"width": 64, "height": 64},
        size_multiple=1,
        description="Renders the prompt itself: the ceiling of the shapes benchmark.",
        model_name="shapes-oracle",
    )


@hookimpl
def t2i_register_nodes(register):
    register(NODE_NAME, RenderPrompt, description=RenderPrompt.description)


@hookimpl
def t2i_register_recipes(register):
    register(RECIPE_NAME, oracle_recipe, description="Renders the prompt (benchmark ceiling).")
