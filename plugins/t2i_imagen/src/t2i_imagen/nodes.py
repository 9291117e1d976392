"""Graph nodes of the Imagen cascade (registered by the plugin).

- ``Imagen.CascadeLatents``: the request's size and seeds -> the base stage's batch (the
  size divided by the SR factor) and the SR stage's; a size that is not the base model's
  size times the SR factor is refused, naming the sizes that work.
- ``Imagen.LowResCondition``: the core's ``LowResCondition`` with IF's units: an integer
  ``noise_level`` in ``[0, 1000)`` (checked when the request is validated).
"""

from __future__ import annotations

import torch

from t2i.diffusion.nodes import LowResCondition
from t2i.graph.node import NodeType, Param, Port
from t2i.payloads import ImageCondition, Latent
from t2i_imagen.noise_aug import AUG_TIMESTEPS, DEFAULT_NOISE_LEVEL, check_noise_level

SEED_RANGE = 2**32


class CascadeLatents(NodeType):
    description = "Size and seeds of a two-stage cascade: the base batch and the SR batch."
    outputs = (Port("base", "LATENT"), Port("sr", "LATENT"))
    params = (
        Param("width", int, 64, minimum=1),
        Param("height", int, 64, minimum=1),
        Param("batch_size", int, 1, minimum=1, maximum=4096),
        Param("seed", int, 0, "seed of the first row; row i uses seed + i"),
        Param("base_size", int, 64, "the base model's trained size", minimum=1),
        Param("factor", int, 4, "the SR stage's upscaling factor", minimum=1),
        Param("strict", bool, True, "refuse sizes other than base_size * factor"),
        Param("channels", int, 3),
    )

    def execute(self, ctx, *, width, height, batch_size, seed, base_size, factor, strict, channels):
        want = base_size * factor
        if strict and (width, height) != (want, want):
            raise ValueError(
                f"size {width}x{height} is not the cascade's {want}x{want} (base {base_size} px "
                f"x SR factor {factor}): request width={want} height={want}"
            )
        if width % factor or height % factor:
            raise ValueError(f"width and height must be multiples of the SR factor {factor}")
        seeds = tuple((seed + i) % SEED_RANGE for i in range(batch_size))
        base = torch.zeros(batch_size, channels, height // factor, width // factor)
        sr = torch.zeros(batch_size, channels, height, width)
        return {"base": Latent(base, seeds=seeds), "sr": Latent(sr, seeds=seeds)}


class ImagenLowResCondition(LowResCondition):
    description = (
        "The base stage's output and an augmentation level (IF timesteps, 0..999) -> the SR "
        "stage's IMAGE_CONDITION."
    )
    inputs = (Port("samples", "LATENT"),)
    outputs = (Port("image_condition", "IMAGE_CONDITION"),)
    params = (
        Param(
            "noise_level",
            int,
            DEFAULT_NOISE_LEVEL,
            "augmentation timestep of the low-res image",
            minimum=0,
            maximum=AUG_TIMESTEPS - 1,
        ),
    )

    def execute(self, ctx, *, samples: Latent, noise_level: int):
        level = check_noise_level(noise_level)
        x = samples.samples.clamp(-1, 1)
        levels = torch.full((x.shape[0],), float(level), device=x.device, dtype=torch.float32)
        return {"image_condition": ImageCondition(x, levels, seeds=samples.seeds)}
