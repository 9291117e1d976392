"""Noise-conditioning augmentation of a super-resolution stage's low-resolution input.

Imagen (Saharia et al. 2022, section 2.5): the low-resolution image is corrupted with
Gaussian noise at an augmentation level that the SR model is told; in training the level is
random, at sampling a fixed one is used. DeepFloyd IF's convention, which this module
follows for every model of the family: the level is an integer timestep ``0 <= level <
1000`` of a ``squaredcos_cap_v2`` DDPM schedule (IF's ``image_noising_scheduler``), the
image is first upsampled bilinearly (``align_corners=True``) to the sample's size, then
noised as ``sqrt(a[level]) * up + sqrt(1 - a[level]) * noise``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

AUG_TIMESTEPS = 1000
"""Levels are integers in ``[0, AUG_TIMESTEPS)``."""
DEFAULT_NOISE_LEVEL = 250
"""IF's default sampling level (``IFSuperResolutionPipeline``)."""


@functools.lru_cache(maxsize=1)
def _alphas() -> np.ndarray:
    """``alphas_cumprod`` of 1000 ``squaredcos_cap_v2`` steps (Nichol & Dhariwal 2021, betas
    capped at 0.999), as numpy: a cache that a dry run on fake tensors cannot fill."""
    t = np.arange(AUG_TIMESTEPS + 1, dtype=np.float64) / AUG_TIMESTEPS
    bar = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    betas = np.minimum(1 - bar[1:] / bar[:-1], 0.999)
    return np.cumprod(1 - betas)


def check_noise_level(level: float) -> int:
    """``level`` as an int in range, or a ValueError naming the range."""
    if not (isinstance(level, (int, float)) and float(level).is_integer()):
        raise ValueError(f"noise_level must be an integer timestep, got {level!r}")
    if not 0 <= level < AUG_TIMESTEPS:
        raise ValueError(
            f"noise_level must be in [0, {AUG_TIMESTEPS}) (timesteps of the augmentation "
            f"schedule; IF's default is {DEFAULT_NOISE_LEVEL}), got {level!r}"
        )
    return int(level)


def upsample(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, ``align_corners=True`` (IF's ``IFSuperResolutionPipeline``)."""
    if tuple(low.shape[-2:]) == tuple(size):
        return low
    return F.interpolate(low, size=size, mode="bilinear", align_corners=True)


def add_noise(image: torch.Tensor, level: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``sqrt(a[level]) * image + sqrt(1 - a[level]) * noise`` per row (levels rounded)."""
    table = torch.as_tensor(_alphas(), device=image.device)
    a = table[level.round().long().clamp(0, AUG_TIMESTEPS - 1)]
    a = a.to(image.dtype).view(-1, *([1] * (image.ndim - 1)))
    return a.sqrt() * image + (1 - a).sqrt() * noise


def _second_draw(shape: tuple[int, ...], seeds: tuple[int, ...]) -> torch.Tensor:
    rows = []
    for seed in seeds:
        g = torch.Generator("cpu").manual_seed(int(seed))
        torch.randn(shape, generator=g)  # the first draw: the sample's starting noise
        rows.append(torch.randn(shape, generator=g))
    return torch.stack(rows)


def augmentation_noise(shape: tuple[int, ...], seeds: tuple[int, ...]) -> torch.Tensor:
    """Row ``i``: the *second* ``randn(shape[1:])`` of a CPU generator seeded with
    ``seeds[i]``, the first being the SR sample's starting noise. This is what
    ``IFSuperResolutionPipeline`` draws with ``generator=[Generator().manual_seed(s) ...]``
    (intermediate images, then the upscaled image's noise), so seeds reproduce IF's images."""
    return _second_draw(tuple(shape[1:]), tuple(int(s) for s in seeds))


def augment(
    low: torch.Tensor,
    level: torch.Tensor,
    size: tuple[int, int],
    seeds: tuple[int, ...] = (),
) -> torch.Tensor:
    """Upsample ``low`` to ``size`` and noise it at ``level``; with ``seeds`` the noise is
    :func:`augmentation_noise`, without it torch's generator draws it (training)."""
    up = upsample(low, size)
    if seeds:
        noise = augmentation_noise(tuple(up.shape), tuple(seeds)).to(up.device, up.dtype)
    else:
        noise = torch.randn_like(up)
    return add_noise(up, level.to(up.device), noise)
