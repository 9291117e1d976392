"""Which recipe and plugins the ONNX runtime uses: a recipe alias names the manifest's recipe
(``Engine.build("toy-ar", runtime="onnx", ...)`` for an export of ``toy-autoregressive``), a
manifest of another recipe is refused naming both, and ``Engine.build(plugins=X)`` is the
plugin set the runtime resolves the recipe (and its ``deployed=`` keyword) in, not the
process-wide one."""

import types

import pytest
from onnx_checks import pixel_distance
from t2i_onnx.manifest import OnnxExportError
from t2i_onnx.runtime import RUNTIME

from t2i.engine import Engine
from t2i.registry import hookimpl
from t2i.testing import make_manager, toy_plugin

PROMPT = "a red circle"


def test_an_alias_names_the_exported_recipe(toy_exports, toy_manager):
    folder = toy_exports["toy-autoregressive"]
    name, _ = RUNTIME.recipe("toy-ar", dir=folder, plugins=toy_manager)
    assert name == "toy-autoregressive"
    pipe = Engine.build("toy-ar", runtime="onnx", plugins=toy_manager, onnx_dir=folder)
    assert pipe.recipe.name == "toy-autoregressive" and pipe.onnx_torch_fallback == []
    expected = Engine.build("toy-ar", plugins=toy_manager)(PROMPT, seed=2)
    assert pixel_distance(pipe(PROMPT, seed=2).images, expected.images) <= 2


def test_an_alias_of_another_recipe_is_refused_naming_both(toy_exports, toy_manager):
    folder = toy_exports["toy-diffusion"]
    with pytest.raises(
        OnnxExportError,
        match=r"export of recipe 'toy-diffusion', not 'toy-ar' \(recipe 'toy-autoregressive'\)",
    ):
        Engine.build("toy-ar", runtime="onnx", plugins=toy_manager, onnx_dir=folder)


def test_an_unknown_recipe_is_refused(toy_exports, toy_manager):
    with pytest.raises(Exception, match="no-such-recipe"):
        Engine.build(
            "no-such-recipe",
            runtime="onnx",
            plugins=toy_manager,
            onnx_dir=toy_exports["toy-diffusion"],
        )


SEEN: list = []


def _deployed_toy_recipe(deployed=None):
    """toy-diffusion, recording the ``deployed=`` it was given."""
    SEEN.append(deployed)
    return toy_plugin.diffusion_toy_recipe()


@hookimpl
def _register(register):
    register("toy-deployed", _deployed_toy_recipe, aliases=("toy-dep",))


PROBE = types.ModuleType("probe_plugin")
PROBE.t2i_register_recipes = _register
"""A plugin only the test's manager has: a recipe whose factory takes ``deployed=``."""


def test_the_runtime_uses_the_build_s_plugins(tmp_path):
    from t2i_onnx.exporter import export_recipe

    from t2i.plugins import get_plugin_manager

    manager = make_manager(toy_plugin, PROBE)
    assert not get_plugin_manager().registry.has("recipe", "toy-deployed")
    out = tmp_path / "export"
    export_recipe("toy-deployed", out, plugins=manager)
    SEEN.clear()
    pipe = Engine.build(runtime="onnx", plugins=manager, onnx_dir=out)
    assert pipe.recipe.name == "toy-deployed"
    assert len(SEEN) == 1 and SEEN[0] is not None, "the factory got no deployed="
    assert SEEN[0]["runtime"] == "onnx" and SEEN[0]["dir"] == str(out.resolve())
    expected = Engine.build("toy-deployed", plugins=manager)(PROMPT, seed=4)
    assert pixel_distance(pipe(PROMPT, seed=4).images, expected.images) <= 2
