"""Architectures of the embedded default ``imagen-shapes`` (and tiny ones for tests).

Base: 32 px, Efficient U-Net of 7.8 M parameters (levels 32/16/8 px; blocks 1/2/2, cross-
attention at 16 and 8 px, self-attention at 8 px). SR: 32 -> 64 px, 5.7 M parameters
(levels 64/32/16/8 px, blocks 1/1/2/2, parameters at the low levels, text at 16 and 8 px).
Both under 16 MiB in fp16.
"""

from __future__ import annotations

from t2i_imagen.efficient_unet import EfficientUNetConfig

BASE_SIZE = 32
SR_FACTOR = 2

SHAPES_BASE = EfficientUNetConfig(
    stem_channels=64,
    channels=(64, 128, 176),
    blocks=(1, 2, 2),
    strides=(1, 2, 2),
    cross_attention=(False, True, True),
    self_attention=(False, False, True),
)
SHAPES_SR = EfficientUNetConfig(
    in_channels=6,
    stem_channels=32,
    channels=(32, 64, 128, 128),
    blocks=(1, 1, 2, 2),
    strides=(1, 2, 2, 2),
    cross_attention=(False, False, True, True),
    self_attention=(False, False, False, True),
    noise_conditioning=True,
)
TINY_BASE = EfficientUNetConfig(
    stem_channels=16,
    channels=(16, 32),
    blocks=(1, 1),
    strides=(1, 2),
    cross_attention=(False, True),
    self_attention=(False, True),
    heads=2,
    groups=8,
)
TINY_SR = EfficientUNetConfig(
    in_channels=6,
    stem_channels=16,
    channels=(16, 32),
    blocks=(1, 1),
    strides=(1, 2),
    cross_attention=(False, True),
    self_attention=(False, False),
    heads=2,
    groups=8,
    noise_conditioning=True,
)


def stage_config(stage: str, *, tiny: bool = False, text_dim: int = 384) -> EfficientUNetConfig:
    """The preset of ``stage`` (``base`` / ``sr``) for a text encoder of width ``text_dim``."""
    import attrs

    cfg = {("base", False): SHAPES_BASE, ("sr", False): SHAPES_SR}.get((stage, tiny))
    if cfg is None:
        cfg = TINY_BASE if stage == "base" else TINY_SR
    return attrs.evolve(cfg, text_dim=text_dim, pooled_dim=text_dim)
