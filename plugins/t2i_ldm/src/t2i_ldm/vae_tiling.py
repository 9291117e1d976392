"""Tiled VAE decoding and encoding: large images in overlapping tiles, blended at the seams.

The decoder's activations grow with the image (a 2048 px SD decode needs tens of GiB); in
tiles the peak is that of one tile whatever the size. The algorithm is diffusers'
``AutoencoderKL.tiled_decode`` (its ``enable_tiling``): latent tiles of ``tile / factor``
cells every 3/4 tile, each decoded alone; each tile's first quarter blended linearly with
the tile above and the tile to its left; the rest (3/4 tile) kept. Encoding (img2img) tiles
the image the same way and blends the encoder's moments (diffusers' ``_tiled_encode``).
Results differ from an untiled pass near the seams (GroupNorm sees one tile's statistics),
as diffusers' do. The peak is one tile's activations plus the tiles kept for blending (about
1.8x the output); the engine's memory pre-check (a fake-tensor dry run) cannot follow one
module called once per tile, so a tiled decode is not pre-checked.
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


def _tiles(fn, x: torch.Tensor, size: int, extent: int, keep: int) -> torch.Tensor:
    """``fn`` on ``size``-wide tiles of ``x`` every 3/4 tile; each output tile blended over its
    first ``extent`` rows and columns with the tiles above and to its left, ``keep`` kept."""
    stride = int(size * (1 - OVERLAP))
    rows = []
    for i in range(0, x.shape[2], stride):
        rows.append([fn(x[:, :, i : i + size, j : j + size]) for j in range(0, x.shape[3], stride)])
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


def tiled_decode(vae, z: torch.Tensor, tile: int) -> torch.Tensor:
    """Decode latents ``z`` (VAE scale: already divided by the scaling factor) in tiles of
    ``tile`` pixels; a latent no larger than one tile is decoded whole, as diffusers does."""
    latent_tile = tile // vae.config.factor
    if z.shape[-1] <= latent_tile and z.shape[-2] <= latent_tile:
        return vae.decode(z)
    extent = int(tile * OVERLAP)
    return _tiles(vae.decode, z, latent_tile, extent, tile - extent)


def tiled_encode(vae, x: torch.Tensor, tile: int):
    """The posterior of image ``x`` in [-1, 1] from tiles of ``tile`` pixels (the encoder's
    moments blended, as diffusers' ``_tiled_encode``); an image no larger than one tile is
    encoded whole."""
    from t2i_ldm.vae import DiagonalGaussian

    if x.shape[-1] <= tile and x.shape[-2] <= tile:
        return vae.encode(x)
    latent_tile = tile // vae.config.factor
    extent = int(latent_tile * OVERLAP)

    def moments(piece: torch.Tensor) -> torch.Tensor:
        return vae.quant_conv(vae.encoder(piece.to(vae.dtype)))

    return DiagonalGaussian(_tiles(moments, x, tile, extent, latent_tile - extent))
