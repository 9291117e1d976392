"""ONNX export and ORT inference of SDXL (base and refiner) on random tiny weights (the ldm
tests' ``save_tiny_sdxl``): Optimum's SDXL layout (``text_encoder``, ``text_encoder_2``,
``unet`` with ``text_embeds`` + ``time_ids``, ``vae_decoder``, ``vae_encoder``); each model
matches its torch module within Optimum's tolerances (UNet 1e-4, VAE 3e-4, CLIP 1e-3), the
image is within 2/255 of the torch runtime's for Euler and DPM++ 2M, the graphs hold no
custom ops, and an ORT generation in a fresh interpreter imports no model code and reads no
checkpoint."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from onnx_checks import custom_domains, example_parity, pixel_distance

from t2i.engine import Engine

pytest.importorskip("t2i_ldm", reason="the LDM plugin is not installed (-e plugins/t2i_ldm)")
pytest.importorskip("diffusers", reason="the tiny SDXL is built with diffusers' classes")

TOLERANCE = {"unet": 1e-4, "vae_decoder": 3e-4, "vae_encoder": 3e-4}
TEXT_TOLERANCE = 1e-3
SAMPLERS = (("Euler", "a dog", (16, 16)), ("DPM++ 2M", "", (24, 32)))
"""Sampler, negative prompt (empty: SDXL's zeroed negative conditioning) and (width, height)
(24 x 32: other spatial sizes than the export's example, non-square)."""
MODELS = {"text_encoder", "text_encoder_2", "unet", "vae_decoder", "vae_encoder"}
FIELDS = {"seed": 3, "steps": 3, "width": 16, "height": 16, "negative_prompt": "a dog"}
FORBIDDEN = (
    "t2i_ldm.unet",
    "t2i_ldm.vae",
    "t2i_ldm.text_encoder",
    "t2i_ldm.openclip",
    "t2i_ldm.sdxl_text",
    "t2i_ldm.sdxl",
    "t2i_ldm.checkpoint",
)
SCRIPT = """
import json, sys
from t2i.engine import Engine
pipe = Engine.build(runtime="onnx", onnx_dir=sys.argv[1])
result = pipe("a red cube", **json.loads(sys.argv[2]))
result.images[0].save(sys.argv[4])
names = sorted(m for m in sys.modules if m in json.loads(sys.argv[3])
               or (m.startswith("transformers.models.") and ".modeling_" in m
                   and not m.endswith(".modeling_auto")))
print(json.dumps({"imported": names, "torch_built": pipe.onnx_torch_built,
                  "deployed": pipe.onnx_deployed, "infotext": result.infotexts[0]}))
"""


def run_without_checkpoints(out, fields: dict, image, checkpoints: list) -> dict:
    """Generate with the export at ``out`` in a fresh interpreter (image to ``image``) while
    ``checkpoints`` are moved away (the runtime reads none); what it imported and built."""
    moved = [Path(c).with_name(Path(c).name + ".away") for c in checkpoints]
    for c, m in zip(checkpoints, moved):
        Path(c).rename(m)
    try:
        args = [str(out), json.dumps(fields), json.dumps(FORBIDDEN), str(image)]
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1", "T2I_LOAD_PLUGINS": "ldm,onnx"},
        )
    finally:
        for c, m in zip(checkpoints, moved):
            m.rename(c)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ldm_conftest():
    path = Path(__file__).parents[1] / "ldm" / "conftest.py"
    spec = importlib.util.spec_from_file_location("ldm_tests_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def manager():
    from t2i_onnx import plugin as onnx_plugin

    from t2i.plugins import set_plugin_manager
    from t2i.testing import make_manager
    from t2i_ldm import plugin as ldm_plugin

    previous = set_plugin_manager(make_manager(ldm_plugin, onnx_plugin))
    yield
    set_plugin_manager(previous)


@pytest.fixture(scope="module")
def sdxl_export(tmp_path_factory):
    """``(options, export folder, manifest)`` of a tiny random SDXL base diffusers folder."""
    from t2i_onnx.exporter import export_recipe

    root = tmp_path_factory.mktemp("onnx-sdxl")
    _pipe, folder, _single = _ldm_conftest().save_tiny_sdxl(root / "model")
    options = {"checkpoint": str(folder)}
    manifest = export_recipe("ldm", root / "export", options=options)
    return options, root / "export", manifest


@pytest.mark.slow
def test_sdxl_models_match_torch(sdxl_export):
    options, out, manifest = sdxl_export
    assert set(manifest["models"]) == MODELS
    unet = json.loads((out / "manifest.json").read_text())["models"]["unet"]
    assert unet["module"] == "unet"
    errors = example_parity(Engine.build("ldm", **options), out, TOLERANCE, TEXT_TOLERANCE)
    print("max abs errors", errors)
    assert set(errors) == MODELS
    assert custom_domains(out) == set()


@pytest.mark.slow
@pytest.mark.parametrize(("sampler", "negative", "size"), SAMPLERS)
def test_sdxl_image_matches_torch(sdxl_export, sampler, negative, size):
    options, out, _ = sdxl_export
    fields = {**FIELDS, "sampler": sampler, "negative_prompt": negative}
    fields.update(width=size[0], height=size[1])
    expected = Engine.build("ldm", **options)("a red cube", **fields)
    pipe = Engine.build(runtime="onnx", onnx_dir=out)
    assert pipe.onnx_torch_built == []
    got = pipe("a red cube", **fields)
    distance = pixel_distance(got.images, expected.images)
    print(sampler, "pixel distance", distance)
    assert distance <= 2
    assert got.infotexts == expected.infotexts


@pytest.mark.slow
def test_sdxl_runtime_imports_no_model_code(sdxl_export, tmp_path):
    options, out, manifest = sdxl_export
    found = run_without_checkpoints(out, FIELDS, tmp_path / "a.png", [options["checkpoint"]])
    assert found["imported"] == [] and found["torch_built"] == []
    assert set(found["deployed"]) == set(manifest["components"])


def test_sdxl_unet_export_inputs_follow_optimum(sdxl_export):
    options, _, _ = sdxl_export
    pipe = Engine.build("ldm", **options)
    from t2i_onnx.exporter import loaded_components

    specs = {
        c.node: c.component.export_spec()
        for c in loaded_components(pipe)
        if hasattr(c.component, "export_spec")
    }
    (unet,) = specs["denoiser"].modules
    assert unet.input_names[3:] == ("text_embeds", "time_ids")
    assert tuple(unet.example_inputs[4].shape) == (2, 6)
    assert {m.name for m in specs["text_encoder"]} == {"text_encoder", "text_encoder_2"}
    assert torch.is_floating_point(unet.example_inputs[1])


@pytest.fixture(scope="module")
def refiner_export(tmp_path_factory):
    """``(options, export folder, manifest)`` of a tiny random SDXL base + refiner pair."""
    from t2i_onnx.exporter import export_recipe

    root = tmp_path_factory.mktemp("onnx-sdxl-refiner")
    conftest = _ldm_conftest()
    _, base, _ = conftest.save_tiny_sdxl(root / "base")
    _, refiner, _ = conftest.save_tiny_sdxl(root / "refiner", refiner=True)
    options = {"checkpoint": str(base), "refiner": str(refiner), "refiner_switch_at": 0.5}
    manifest = export_recipe("ldm", root / "export", options=options)
    return options, root / "export", manifest


REFINER_FIELDS = {**FIELDS, "steps": 4, "sampler": "Euler"}


@pytest.mark.slow
def test_sdxl_refiner_export_and_image_match_torch(refiner_export):
    """Base + refiner (A1111's Refiner): the refiner's ``text_encoder_2`` (bigG alone) and
    ``unet`` (5 micro numbers, the aesthetic score) export beside the base's."""
    options, out, manifest = refiner_export
    refined = {n for n in manifest["models"] if n not in MODELS}
    assert {"text_encoder_2", "unet"} <= {manifest["models"][n]["module"] for n in refined}
    assert not any(manifest["models"][n]["module"] == "text_encoder" for n in refined)
    torch_pipe = Engine.build("ldm", **options)
    errors = example_parity(torch_pipe, out, TOLERANCE, TEXT_TOLERANCE)
    print("max abs errors", errors)
    assert custom_domains(out) == set()
    expected = torch_pipe("a red cube", **REFINER_FIELDS)
    pipe = Engine.build(runtime="onnx", onnx_dir=out)
    assert pipe.onnx_torch_built == []
    got = pipe("a red cube", **REFINER_FIELDS)
    distance = pixel_distance(got.images, expected.images)
    print("refiner pixel distance", distance)
    assert distance <= 2
    assert got.infotexts == expected.infotexts


@pytest.mark.slow
def test_sdxl_refiner_runtime_reads_no_checkpoint(refiner_export, tmp_path):
    """As the base alone: with both checkpoints moved away, an ORT generation of the base +
    refiner export imports no model code, builds no component in torch and gives the torch
    runtime's image and infotext (``Refiner: NAME [hash]`` from the export's graph)."""
    from PIL import Image

    options, out, manifest = refiner_export
    expected = Engine.build("ldm", **options)("a red cube", **REFINER_FIELDS)
    image = tmp_path / "refined.png"
    checkpoints = [options["checkpoint"], options["refiner"]]
    found = run_without_checkpoints(out, REFINER_FIELDS, image, checkpoints)
    assert found["imported"] == [] and found["torch_built"] == []
    assert set(found["deployed"]) == set(manifest["components"])
    assert pixel_distance([Image.open(image).convert("RGB")], expected.images) <= 2
    assert found["infotext"] == expected.infotexts[0]
