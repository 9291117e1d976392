"""Graph nodes of the DALL-E family: the token grid of a request, and image priming.

- ``Dalle.Grid64`` / ``Dalle.Grid256`` (:func:`grid_node`): the shape ``(B, 1, h, w)`` and
  seeds of a batch of token grids for a model of one image side; ``width`` / ``height`` accept
  that side only (a node parameter's choices), so a request for another size is a
  :class:`~t2i.request.RequestError` when the request is made, before any model work.
- ``Dalle.PrimeTokens``: DALL-E's image-prompt completion (the autoregressive img2img): the
  first ``rows`` rows of an init image's token grid are kept and the sampler draws the rest
  (:class:`~t2i_dalle.components.PrimedPredictor`).
"""

from __future__ import annotations

import attrs
import torch

from t2i.graph.node import NodeType, Param, Port
from t2i.graph.nodes import SEED_RANGE
from t2i.payloads import Latent


def grid_node(side: int, factor: int) -> type[NodeType]:
    """A node type of the token grid of ``side`` px images at ``factor`` px per token."""

    class DalleGrid(NodeType):
        description = (
            f"The token grid (B, 1, {side // factor}, {side // factor}) of {side}x{side} images "
            "and the seeds of its rows (row i uses seed + i)."
        )
        outputs = (Port("latent", "LATENT"),)
        params = (
            Param("width", int, side, f"image width (this model: {side})", choices=(side,)),
            Param("height", int, side, f"image height (this model: {side})", choices=(side,)),
            Param("batch_size", int, 1, minimum=1),
            Param("seed", int, 0, "seed of the first row; row i uses seed + i"),
        )

        def execute(self, ctx, *, width, height, batch_size, seed):
            n = side // factor
            seeds = tuple((seed + i) % SEED_RANGE for i in range(batch_size))
            return {"latent": Latent(torch.zeros(batch_size, 1, n, n), seeds=seeds)}

    DalleGrid.__name__ = DalleGrid.__qualname__ = f"DalleGrid{side}"
    return DalleGrid


Grid64 = grid_node(64, 4)
Grid256 = grid_node(256, 16)


class PrimeTokens(NodeType):
    description = (
        "Image-prompt completion (DALL-E): keep the top rows of an init image's token grid and "
        "let the sampler draw the rest."
    )
    inputs = (Port("guided", "GUIDED_MODEL"), Port("init", "LATENT"))
    outputs = (Port("guided", "GUIDED_MODEL"),)
    params = (Param("rows", int, 7, "token rows kept from the init image", minimum=1),)

    def execute(self, ctx, *, guided, init, rows):
        from t2i_dalle.components import PrimedPredictor

        grid = init.samples
        if grid.ndim != 4 or grid.shape[1] != 1:
            raise ValueError(
                f"PrimeTokens needs a (B, 1, h, w) token grid, got {tuple(grid.shape)}"
            )
        h, w = grid.shape[2:]
        if rows >= h:
            raise ValueError(f"rows={rows} keeps the whole {h}-row grid: use 1 .. {h - 1}")
        prime = grid[:, 0, :rows].reshape(grid.shape[0], rows * w).long()
        return {"guided": attrs.evolve(guided, model=PrimedPredictor(guided.model, prime))}
