"""Fixtures of the DreamBooth tests: a manager with the toy family (a third party's) and
the DreamBooth plugin, and instance folders of random images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from t2i.plugins import set_plugin_manager
from t2i.testing import make_manager, toy_plugin


@pytest.fixture
def toy_manager():
    from t2i_dreambooth import plugin

    manager = make_manager(toy_plugin, plugin)
    previous = set_plugin_manager(manager)
    yield manager
    set_plugin_manager(previous)


def write_images(folder, sizes, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def images():
    """``images(folder, [(w, h), ...])``: write random PNGs of those sizes."""
    return write_images


@pytest.fixture
def instance_dir(tmp_path):
    return write_images(tmp_path / "instance", [(8, 8)] * 3)
