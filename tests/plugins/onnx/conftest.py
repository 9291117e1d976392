"""Fixtures of the ONNX plugin's tests: exports of the toy recipes (session-scoped)."""

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the export extra)")
pytest.importorskip("t2i_onnx", reason="the ONNX plugin is not installed (-e plugins/t2i_onnx)")

from onnx_checks import TOY_RECIPES

from t2i.testing import make_manager, toy_plugin


@pytest.fixture(scope="session")
def toy_manager():
    return make_manager(toy_plugin)


@pytest.fixture(scope="session")
def toy_exports(tmp_path_factory, toy_manager):
    """Recipe -> the folder ``export_recipe`` wrote for it."""
    from t2i_onnx.exporter import export_recipe

    root = tmp_path_factory.mktemp("onnx-toys")
    folders = {}
    for recipe in TOY_RECIPES:
        folders[recipe] = root / recipe
        export_recipe(recipe, folders[recipe], plugins=toy_manager)
    return folders
