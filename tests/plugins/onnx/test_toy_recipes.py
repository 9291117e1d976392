"""Export and ONNX Runtime inference of the toy recipes (every generation shape): the layout,
the manifest, per-model parity, images within 2/255 of torch, the ORT modules really run."""

import json

import onnx
import pytest
from onnx_checks import TOY_RECIPES, custom_domains, example_parity, pixel_distance

from t2i.engine import Engine
from t2i.testing import toy_plugin

PROMPT = "a red circle"


@pytest.mark.parametrize("recipe", TOY_RECIPES)
def test_layout_and_manifest(toy_exports, recipe):
    folder = toy_exports[recipe]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "t2i-onnx" and manifest["format_version"] == 1
    assert manifest["recipe"]["name"] == recipe
    assert manifest["graph"]["meta"]["name"] == recipe and manifest["defaults"]
    for name, entry in manifest["models"].items():
        assert entry["file"] == f"{name}/model.onnx"
        model = onnx.load(str(folder / entry["file"]))
        assert [i.name for i in model.graph.input] == [i["name"] for i in entry["inputs"]]
        shapes = {v["name"]: v["shape"] for v in entry["inputs"] + entry["outputs"]}
        for value, axes in entry["dynamic_axes"].items():  # the spec's axes are the graph's
            assert {int(a): n for a, n in axes.items()} == {
                a: d for a, d in enumerate(shapes[value]) if isinstance(d, str)
            }
    assert not list(folder.parent.glob(f".{recipe}.partial-*"))


@pytest.mark.parametrize("recipe", TOY_RECIPES)
def test_models_match_torch_and_contain_no_custom_ops(toy_exports, toy_manager, recipe):
    pipe = Engine.build(recipe, plugins=toy_manager)
    errors = example_parity(pipe, toy_exports[recipe], {}, 1e-5)
    assert errors
    assert custom_domains(toy_exports[recipe]) == set()


@pytest.mark.parametrize("recipe", TOY_RECIPES)
def test_images_match_torch_and_run_in_onnx(toy_exports, toy_manager, recipe):
    torch_pipe = Engine.build(recipe, plugins=toy_manager)
    onnx_pipe = Engine.build(runtime="onnx", plugins=toy_manager, onnx_dir=toy_exports[recipe])
    assert onnx_pipe.onnx_torch_fallback == []
    fields = {"seed": 11, "batch_size": 2}
    expected = torch_pipe(PROMPT, **fields)
    calls = dict(toy_plugin.CALLS)
    got = onnx_pipe(PROMPT, **fields)
    assert pixel_distance(got.images, expected.images) <= 2
    assert got.infotexts == expected.infotexts
    if recipe == "toy-diffusion":  # the eps model's torch forward (which counts) never ran
        assert toy_plugin.CALLS["denoiser"] == calls["denoiser"]


def test_external_data(tmp_path, toy_manager):
    from t2i_onnx.exporter import export_recipe

    out = tmp_path / "ext"
    manifest = export_recipe("toy-diffusion", out, plugins=toy_manager, external_data_bytes=0)
    assert all(e["external_data"] for e in manifest["models"].values())
    assert (out / "denoiser" / "model.onnx.data").is_file()
    expected = Engine.build("toy-diffusion", plugins=toy_manager)(PROMPT, seed=3)
    got = Engine.build(runtime="onnx", plugins=toy_manager, onnx_dir=out)(PROMPT, seed=3)
    assert pixel_distance(got.images, expected.images) <= 2


def test_fp16_export(tmp_path, toy_manager):
    from t2i_onnx.exporter import export_recipe

    out = tmp_path / "half"
    manifest = export_recipe("toy-gan", out, plugins=toy_manager, fp16=True)
    assert manifest["fp16"] and manifest["models"]["generator"]["inputs"][0]["dtype"] == "float16"
    expected = Engine.build("toy-gan", plugins=toy_manager)(PROMPT, seed=5, batch_size=2)
    got = Engine.build(runtime="onnx", plugins=toy_manager, onnx_dir=out)(
        PROMPT, seed=5, batch_size=2
    )
    assert pixel_distance(got.images, expected.images) <= 2
