"""IF's T5 text encoder in the ONNX export: `t2i export onnx` of a tiny random IF stage I/II
pair writes ``text_encoder/model.onnx`` (inputs ``input_ids`` and ``attention_mask``, as
Optimum's T5 encoder), deployed by :func:`t2i_imagen.deployed.t5_text_encoder`; the exported
encoder matches ``T5EncoderModel`` within 1e-3 (Optimum's text-encoder tolerance) on padded
prompts of several lengths, and the runtime's cascade image is within 2/255 of torch's."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from onnx_checks import example_parity, pixel_distance

from t2i.engine import Engine

pytest.importorskip("t2i_imagen", reason="the Imagen plugin is not installed")
pytest.importorskip("diffusers")

TEXT_TOLERANCE = 1e-3
PROMPTS = ["a red circle", "the big blue square on the left of a small green triangle", ""]
FIELDS = {"seed": 3, "steps": 2, "sr_steps": 1, "negative_prompt": "a cat"}


def _if_fixtures():
    path = Path(__file__).parents[1] / "imagen" / "if_fixtures.py"
    spec = importlib.util.spec_from_file_location("if_fixtures_for_onnx", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def if_manager():
    from t2i_imagen import plugin as imagen_plugin
    from t2i_onnx import plugin as onnx_plugin

    from t2i.plugins import set_plugin_manager
    from t2i.testing import make_manager

    chosen = make_manager(imagen_plugin, onnx_plugin)
    previous = set_plugin_manager(chosen)
    yield chosen
    set_plugin_manager(previous)


@pytest.fixture(scope="module")
def if_export(tmp_path_factory, if_manager):
    """``(recipe options, export folder)`` of a tiny random IF stage I + II pair."""
    from t2i_onnx.exporter import export_recipe

    root = tmp_path_factory.mktemp("if-t5")
    (stage1, stage2), _, _ = _if_fixtures().write_if_folders(root)
    options = {"checkpoint": str(stage1), "sr_checkpoint": str(stage2)}
    out = root / "export"
    export_recipe("imagen", out, options=options, plugins=if_manager)
    return options, out


@pytest.mark.slow
def test_export_writes_the_t5_encoder_with_its_mask_input(if_export):
    options, out = if_export
    assert (out / "text_encoder" / "model.onnx").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    model = manifest["models"]["text_encoder"]
    assert [i["name"] for i in model["inputs"]] == ["input_ids", "attention_mask"]
    assert [o["name"] for o in model["outputs"]] == ["last_hidden_state"]
    deployment = manifest["components"]["text_encoder"]["deployment"]
    assert deployment == {"factory": "t2i_imagen.deployed:t5_text_encoder",
                          "options": {"hidden_size": 48}}  # fmt: skip
    errors = example_parity(Engine.build("imagen", **options), out, {}, TEXT_TOLERANCE)
    assert errors["text_encoder"] <= TEXT_TOLERANCE


@pytest.mark.slow
def test_deployed_t5_matches_torch_on_padded_prompts(if_export):
    options, out = if_export
    torch_pipe = Engine.build("imagen", **options)
    onnx_pipe = Engine.build(runtime="onnx", onnx_dir=out)
    assert "text_encoder" in onnx_pipe.onnx_deployed
    assert onnx_pipe.onnx_torch_built == [] and onnx_pipe.onnx_torch_fallback == []
    (tokenizer, torch_t5), (_, onnx_t5) = (
        (_component(p, "tokenizer"), _component(p, "text_encoder")) for p in (torch_pipe, onnx_pipe)
    )
    assert type(onnx_t5).__name__ == "DeployedT5TextEncoder"
    tokens = tokenizer(PROMPTS)
    assert len(set(tokens.mask.sum(1).tolist())) == len(PROMPTS)  # three lengths of padding
    expected, got = torch_t5(tokens), onnx_t5(tokens)
    assert torch.equal(got.mask, expected.mask)
    assert float((got.embeds - expected.embeds).abs().max()) <= TEXT_TOLERANCE


@pytest.mark.slow
def test_runtime_cascade_image_matches_torch(if_export):
    options, out = if_export
    expected = Engine.build("imagen", **options)("a red circle on the left", **FIELDS)
    got = Engine.build(runtime="onnx", onnx_dir=out)("a red circle on the left", **FIELDS)
    assert pixel_distance(got.images, expected.images) <= 2
    assert got.infotexts == expected.infotexts


def _component(pipe, node: str):
    """The component loader node ``node`` gives in ``pipe`` (the runtime's, when deployed)."""
    found = {}

    def collect(node_id: str, kind: str, component):
        found.setdefault(node_id, component)
        return component

    pipe.map_components(collect)
    return found[node]


@pytest.mark.slow
def test_runtime_imports_no_t5_model_code(if_export):
    import os
    import subprocess
    import sys

    script = (
        "import sys; from t2i.engine import Engine\n"
        "Engine.build(runtime='onnx', onnx_dir=sys.argv[1])('a red circle', seed=1, steps=1, "
        "sr_steps=1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('transformers.models.t5.')))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "T2I_LOAD_PLUGINS": "imagen,onnx"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(if_export[1])],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = proc.stdout.strip().splitlines()[-1]
    assert "modeling_t5" not in imported, imported
