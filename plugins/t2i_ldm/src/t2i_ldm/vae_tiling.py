"""Tiled VAE decoding: large images decoded in overlapping tiles, blended at the seams.

The decoder's activations grow with the image (a 2048 px SD decode needs tens of GiB); in
tiles the peak is that of one tile whatever the size. The algorithm is diffusers'
``AutoencoderKL.tiled_decode`` (its ``enable_tiling``): latent tiles of ``tile / factor``
cells every 3/4 tile, each decoded alone; each tile's first quarter blended linearly with
the tile above and the tile to its left; the rest (3/4 tile) kept. The result differs from an
untiled decode near the seams (GroupNorm sees one tile's statistics), as diffusers' does.
The peak is one tile's activations plus the decoded tiles kept for blending (about 1.8x the
image); the engine's memory pre-check (a fake-tensor dry run) cannot follow one module
called once per tile, so a tiled decode is not pre-checked.
"""

from __future__ import annotations

import torch

OVERLAP = 0.25
"""diffusers' ``tile_overlap_factor``."""


def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """``b`` with its first ``extent`` rows (``dim`` 2) or columns (3) faded in from ``a``'s
    last ones (in place, as diffusers' ``blend_v`` / ``blend_h``)."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    for k in range(extent):
        w = k / extent
        mixed = a.select(dim, a.shape[dim] - extent + k) * (1 - w) + b.select(dim, k) * w
        b.select(dim, k).copy_(mixed)
    return b


def tiled_decode(vae, z: torch.Tensor, tile: int) -> torch.Tensor:
    """Decode latents ``z`` (VAE scale: already divided by the scaling factor) in tiles of
    ``tile`` pixels; a latent no larger than one tile is decoded whole, as diffusers does."""
    factor = vae.config.factor
    latent_tile = tile // factor
    if z.shape[-1] <= latent_tile and z.shape[-2] <= latent_tile:
        return vae.decode(z)
    stride = int(latent_tile * (1 - OVERLAP))
    extent = int(tile * OVERLAP)
    keep = tile - extent
    rows = []
    for i in range(0, z.shape[2], stride):
        row = []
        for j in range(0, z.shape[3], stride):
            row.append(vae.decode(z[:, :, i : i + latent_tile, j : j + latent_tile]))
        rows.append(row)
    out_rows = []
    for i, row in enumerate(rows):
        kept = []
        for j, piece in enumerate(row):
            if i > 0:
                piece = _blend(rows[i - 1][j], piece, extent, 2)
            if j > 0:
                piece = _blend(row[j - 1], piece, extent, 3)
            kept.append(piece[:, :, :keep, :keep])
        out_rows.append(torch.cat(kept, dim=3))
    return torch.cat(out_rows, dim=2)
