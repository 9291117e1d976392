"""The ``ldm`` recipe on an SD checkpoint under the ONNX runtime reads no checkpoint: with its
UNet, VAE and CLIP exported (every one a deployment), ``Engine.build(runtime="onnx",
onnx_dir=DIR)`` and ``Engine.build("ldm", checkpoint=F, runtime="onnx", onnx_dir=DIR)`` build
from the manifest and the exported models alone (the tokenizer from the export's copy), so the
checkpoint may be gone; in a fresh interpreter no LDM torch model module is imported, and the
image is within 2/255 of the torch runtime's."""

import json
import os
import subprocess
import sys

import pytest
from onnx_checks import pixel_distance
from PIL import Image

from t2i.engine import Engine

pytest.importorskip("t2i_ldm", reason="the LDM plugin is not installed (-e plugins/t2i_ldm)")

import test_ldm

manager = test_ldm.manager  # the LDM and ONNX plugins as the process-wide manager (autouse)
tiny_sd1 = test_ldm.tiny_sd1  # a random tiny single-file SD1 checkpoint and its tokenizer

FORBIDDEN = (
    "t2i_ldm.unet",
    "t2i_ldm.vae",
    "t2i_ldm.clip_text",
    "t2i_ldm.text_encoder",
    "t2i_ldm.checkpoint",
    "t2i_ldm.loader",
    "t2i_ldm.diffusers_format",
)
FIELDS = {"seed": 4, "steps": 3, "width": 16, "height": 16, "negative_prompt": "a dog"}
PROMPT = "a red cube"
SCRIPT = """
import json, sys
from t2i.engine import Engine
folder, out, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
pipe = Engine.build(runtime="onnx", onnx_dir=folder, **extra)
result = pipe(sys.argv[4], **json.loads(sys.argv[5]))
result.images[0].save(out)
forbidden = json.loads(sys.argv[6])  # modules, and their submodules
names = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in forbidden)
               or (m.startswith("transformers.models.") and ".modeling_" in m
                   and not m.endswith(".modeling_auto")))
print(json.dumps({"imported": names, "torch_built": pipe.onnx_torch_built,
                  "deployed": pipe.onnx_deployed, "infotext": result.infotexts[0]}))
"""


def run_isolated(folder, out, **extra) -> dict:
    """Build and generate with the export at ``folder`` in a fresh interpreter (image to
    ``out``); what it imported, built and deployed."""
    args = [str(folder), str(out), json.dumps(extra), PROMPT, json.dumps(FIELDS)]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args, json.dumps(FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "T2I_LOAD_PLUGINS": "ldm,onnx"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def export_and_hide(options: dict, tmp_path) -> tuple:
    """Export recipe ``ldm`` with ``options``, render the torch runtime's image, then move the
    checkpoint away; ``(export folder, torch result)``."""
    from t2i_onnx.exporter import export_recipe

    out = tmp_path / "export"
    manifest = export_recipe("ldm", out, options=options)
    assert all(c["deployment"] for c in manifest["components"].values())
    assert manifest["tokenizers"]["tokenizer"]["files"]
    expected = Engine.build("ldm", **options)(PROMPT, **FIELDS)
    checkpoint = options["checkpoint"]
    os.rename(checkpoint, f"{checkpoint}.hidden")  # a build that opens it fails
    return out, expected


def check_run(found: dict, image_path, expected) -> None:
    assert found["imported"] == [] and found["torch_built"] == []
    assert set(found["deployed"]) == {"text_encoder", "denoiser", "decoder"}
    assert pixel_distance([Image.open(image_path).convert("RGB")], expected.images) <= 2
    assert found["infotext"] == expected.infotexts[0]


@pytest.mark.slow
def test_single_file_checkpoint_is_not_read(tiny_sd1, tmp_path):
    options = {**tiny_sd1}
    out, expected = export_and_hide(options, tmp_path)
    try:
        check_run(run_isolated(out, tmp_path / "a.png"), tmp_path / "a.png", expected)
        named = {"recipe": "ldm", "checkpoint": options["checkpoint"]}
        check_run(run_isolated(out, tmp_path / "b.png", **named), tmp_path / "b.png", expected)
    finally:
        os.rename(f"{options['checkpoint']}.hidden", options["checkpoint"])


@pytest.mark.slow
def test_diffusers_folder_is_not_read(tmp_path):
    import importlib.util

    pytest.importorskip("diffusers")
    path = os.path.join(os.path.dirname(__file__), "..", "ldm", "conftest.py")
    spec = importlib.util.spec_from_file_location("ldm_test_fixtures", path)
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    _, folder = fixtures.save_tiny_sd(tmp_path / "sd")
    out, expected = export_and_hide({"checkpoint": str(folder)}, tmp_path)
    check_run(run_isolated(out, tmp_path / "a.png"), tmp_path / "a.png", expected)


def test_exported_facts_come_from_the_manifest():
    from t2i_ldm.recipes import checkpoint_facts

    graph = {
        "meta": {"defaults": {"width": 768}, "model_hash": "abc"},
        "nodes": {
            "tokenizer": {"type": "LoadTokenizer", "params": {"options": {"pad_id": 0}}},
            "inpaint": {"type": "Ldm.InpaintCondition", "params": {}},
        },
    }
    deployed = {
        "provided": ["text_encoder", "denoiser", "decoder"],
        "graph": graph,
        "tokenizers": {"tokenizer": "/export/tokenizer"},
    }
    tok = {"checkpoint": "/nowhere/model.safetensors", "dtype": "float16", "allow_pickle": True}
    facts = checkpoint_facts("/nowhere/model.safetensors", tok, deployed)
    assert (facts.resolution, facts.inpaint, facts.model_hash, facts.models) == (
        768, True, "abc", None,
    )  # fmt: skip
    assert facts.tokenizer_options == {
        "allow_pickle": True, "tokenizer": "/export/tokenizer", "pad_id": 0,
    }  # fmt: skip
    with pytest.raises(Exception, match="no such file"):  # not all provided: the file is read
        checkpoint_facts("/nowhere/model.safetensors", tok, {**deployed, "provided": ["decoder"]})


def test_emphasis_modes_match_the_text_encoder():
    from t2i_ldm import recipes, text_encoder

    assert recipes.EMPHASIS_MODES == text_encoder.EMPHASIS_MODES
