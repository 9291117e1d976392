"""The ONNX runtime path imports none of the family's torch model code: an ORT generation in a
fresh interpreter, then none of the network modules (``t2i_ldm.unet``, ``t2i_imagen.
efficient_unet``, ``t2i_imagen.if_unet``, ``t2i_gan.models``, the text encoders' modules,
transformers' modeling modules) is in ``sys.modules``, for the embedded defaults and for a
tiny random DeepFloyd IF pair (recipe ``imagen`` on IF folders). Every component is a
deployment (``t2i.contracts.Deployment``), none was built in torch.
(``transformers.models.auto.modeling_auto`` is transformers' table of class names, which
importing any config loads; it holds no model.)"""

import json
import os
import subprocess
import sys

import pytest

FORBIDDEN = (
    "t2i_ldm.unet",
    "t2i_ldm.vae",
    "t2i_ldm.text_encoder",
    "t2i_ldm.minilm",
    "t2i_ldm.openclip",
    "t2i_imagen.efficient_unet",
    "t2i_imagen.if_unet",
    "t2i_imagen.t5",
    "t2i_gan.models",
)
SCRIPT = """
import json, sys
from t2i.engine import Engine
pipe = Engine.build(runtime="onnx", onnx_dir=sys.argv[1])
pipe("a red circle", seed=1, steps=2, **json.loads(sys.argv[2]))
forbidden = json.loads(sys.argv[3])  # modules, and their submodules
names = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in forbidden)
               or (m.startswith("transformers.models.") and ".modeling_" in m
                   and not m.endswith(".modeling_auto")))
print(json.dumps({"imported": names, "torch_built": pipe.onnx_torch_built,
                  "deployed": pipe.onnx_deployed}))
"""


def run_isolated(folder, family: str, forbidden: tuple = FORBIDDEN, **fields) -> dict:
    """Generate with the export at ``folder`` in a fresh interpreter; which of ``forbidden``
    (and transformers' modeling modules) it imported."""
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), json.dumps(fields), json.dumps(forbidden)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "T2I_LOAD_PLUGINS": f"{family},onnx"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["ldm-shapes", "imagen-shapes"])
def test_an_onnx_generation_imports_no_model_code(recipe, tmp_path):
    import importlib

    from t2i_onnx.exporter import export_recipe

    from t2i.testing import make_manager

    family = pytest.importorskip(f"t2i_{recipe.split('-')[0]}")
    plugin = importlib.import_module(f"{family.__name__}.plugin")
    out = tmp_path / recipe
    manifest = export_recipe(recipe, out, plugins=make_manager(plugin))
    assert all(c["deployment"] for c in manifest["components"].values())
    fields = {"sr_steps": 1} if recipe == "imagen-shapes" else {}
    found = run_isolated(out, recipe.split("-")[0], **fields)
    assert found["imported"] == [] and found["torch_built"] == []
    assert set(found["deployed"]) == set(manifest["components"])


IF_FORBIDDEN = tuple(m for m in FORBIDDEN if m != "t2i_imagen.t5")
"""The model modules an IF generation must not import: ``t2i_imagen.t5`` is left out, as it
holds IF's T5 tokenizer too (the runtime's tokenizer; its encoder wraps transformers'
``T5EncoderModel``, whose ``modeling_t5`` the script checks)."""


def _if_folders(root):
    """A tiny random IF stage I and stage II pair (the Imagen tests' fixtures)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "imagen" / "if_fixtures.py"
    spec = importlib.util.spec_from_file_location("if_fixtures_no_model_code", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (stage1, stage2), _, _ = module.write_if_folders(root)
    return stage1, stage2


@pytest.mark.slow
def test_an_if_onnx_generation_imports_no_model_code(tmp_path):
    """DeepFloyd IF (recipe ``imagen`` on IF folders): stage I and II UNets and T5 deployed;
    the runtime imports neither ``t2i_imagen.if_unet`` nor transformers' T5 model."""
    pytest.importorskip("t2i_imagen")
    pytest.importorskip("diffusers")
    from t2i_imagen import plugin as imagen_plugin
    from t2i_onnx.exporter import export_recipe

    from t2i.testing import make_manager

    stage1, stage2 = _if_folders(tmp_path)
    options = {"checkpoint": str(stage1), "sr_checkpoint": str(stage2)}
    out = tmp_path / "export"
    manifest = export_recipe("imagen", out, options=options, plugins=make_manager(imagen_plugin))
    assert all(c["deployment"] for c in manifest["components"].values())
    found = run_isolated(out, "imagen", IF_FORBIDDEN, sr_steps=1)
    assert found["imported"] == [] and found["torch_built"] == []
    assert set(found["deployed"]) == set(manifest["components"])
