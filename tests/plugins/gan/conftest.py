"""Fixtures of the GAN plugin's tests: tiny DF-GAN configs and MiniLM's availability."""

import pytest
from t2i_gan.models import GanConfig

TINY = GanConfig(nf=2, z_dim=8, cond_dim=6, image_size=32)


@pytest.fixture
def tiny_config() -> GanConfig:
    return TINY
