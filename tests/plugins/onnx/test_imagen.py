"""The Imagen family (t2i_imagen) through the exporter: the shipped imagen-shapes cascade (base
32 px + SR 64 px Efficient U-Nets). Every input of both UNets has a dynamic batch axis
(timestep, mask, pooled, noise_level included), so batch 2 (one prompt under CFG), 3 and 6
(three prompts under CFG) run in ONNX Runtime; each model matches torch within 1e-4 and the
final images within 2/255."""

import pytest
from onnx_checks import custom_domains, example_parity, pixel_distance

from t2i.engine import Engine

pytest.importorskip("t2i_imagen", reason="the Imagen plugin is not installed")

TOLERANCE = {"unet": 1e-4, "sr_unet": 1e-4, "text_encoder": 1e-3}


@pytest.fixture(scope="module")
def imagen_manager():
    from t2i_imagen import plugin as imagen_plugin

    from t2i.testing import make_manager

    return make_manager(imagen_plugin)


@pytest.fixture(scope="module")
def imagen_export(tmp_path_factory, imagen_manager):
    from t2i_onnx.exporter import export_recipe

    out = tmp_path_factory.mktemp("onnx-imagen") / "export"
    manifest = export_recipe("imagen-shapes", out, plugins=imagen_manager)
    assert not any(m.get("fixed_batch_inputs") for m in manifest["models"].values())
    return out


@pytest.mark.slow
def test_every_input_has_a_dynamic_batch_axis(imagen_export, imagen_manager):
    import json

    manifest = json.loads((imagen_export / "manifest.json").read_text())
    for model in manifest["models"].values():
        assert all(isinstance(i["shape"][0], str) for i in model["inputs"]), model["inputs"]
    pipe = Engine.build("imagen-shapes", plugins=imagen_manager)
    errors = example_parity(pipe, imagen_export, TOLERANCE, 1e-4)  # batch 2 and batch 3
    assert set(errors) == {"text_encoder", "unet", "sr_unet"}
    assert custom_domains(imagen_export) == set()


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 3])
def test_cascade_images_match_torch(imagen_export, imagen_manager, batch_size):
    """batch 1 under CFG is a UNet batch of 2; batch 3 one of 6."""
    fields = {"seed": 3, "steps": 3, "sr_steps": 2, "batch_size": batch_size}
    prompt = "a red circle on the left"
    expected = Engine.build("imagen-shapes", plugins=imagen_manager)(prompt, **fields)
    pipe = Engine.build(runtime="onnx", plugins=imagen_manager, onnx_dir=imagen_export)
    got = pipe(prompt, **fields)
    assert pipe.onnx_torch_fallback == [] and pipe.onnx_torch_built == []
    assert pixel_distance(got.images, expected.images) <= 2
    assert got.infotexts == expected.infotexts
