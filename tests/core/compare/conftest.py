"""A plugin manager with the toy family and a third party's shapes defaults."""

from __future__ import annotations

import pytest

from t2i.plugins import set_plugin_manager
from t2i.registry import hookimpl
from t2i.testing import make_manager, toy_plugin


def _unbuildable():
    from t2i.checkpoints import CheckpointError

    raise CheckpointError("no trained weights shipped", path="weights/", fix="pass --checkpoint")


class ThirdParty:
    """A third party's plugin: three shapes defaults on the toy components, one unbuildable."""

    @hookimpl
    def t2i_register_recipes(self, register):
        register("toy-shapes", toy_plugin.diffusion_toy_recipe, default=True)
        register("toy-gan-shapes", toy_plugin.gan_recipe)
        register("toy-ar-shapes", toy_plugin.autoregressive_recipe)
        register("broken-shapes", _unbuildable)


@pytest.fixture(scope="module")
def manager():
    m = make_manager(toy_plugin)
    m.register_plugin(ThirdParty(), "third_party")
    previous = set_plugin_manager(m)
    yield m
    set_plugin_manager(previous)
