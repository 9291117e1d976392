"""fp16 export on the CPU: ``t2i export onnx sd ... --fp16`` of a random-weight tiny SD1
checkpoint writes float16 graphs: every weight (initializer) float16, the float inputs and
outputs float16 as the manifest says (the VAE decoder's image stays float32, its export
boundary), each graph loadable by ONNX Runtime. ORT 1.32's CPU provider runs these float16
graphs, so each model is compared with the fp32 torch module on its example inputs (loose fp16
tolerance) and the ORT image with the fp32 torch runtime's. The float16 CLIP graph used to
turn float32 after its causal attention (the TorchScript exporter's ``scaled_dot_product_
attention`` adds a float32 mask) and ORT refused it: :func:`t2i_onnx.exporter.
half_safe_attention`. The embedded defaults (ldm-shapes, imagen-shapes: boolean attention
masks) export to float16 too and run on ORT's CPU provider. (fp16 speed is for the GPU:
issue 17 checks it there.)"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from onnx_checks import pixel_distance
from t2i_onnx.exporter import half_safe_attention, loaded_components

from t2i.engine import Engine

pytest.importorskip("t2i_ldm", reason="the LDM plugin is not installed (-e plugins/t2i_ldm)")

import test_ldm

manager = test_ldm.manager  # the LDM and ONNX plugins as the process-wide manager (autouse)
tiny_sd1 = test_ldm.tiny_sd1  # a random tiny single-file SD1 checkpoint and its tokenizer

FP16_TOLERANCE = 2e-2
"""Max abs error of a float16 graph vs the fp32 module, relative to the output's scale (at
least 1): float16's 2^-11 rounding over a few layers of random tiny weights (seen: < 2e-3)."""
IMAGE_TOLERANCE = 4
"""Per pixel (of 255) between the fp16 ORT image and the fp32 torch one (seen: 1)."""
FIELDS = {"seed": 4, "steps": 3, "width": 16, "height": 16, "negative_prompt": "a dog"}
FLOAT32_OUTPUTS = {("vae_decoder", "sample")}
"""Outputs an export boundary casts to float32 itself (the decoded image)."""
FLOATS = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


@pytest.fixture(scope="module")
def fp16_export(tiny_sd1, tmp_path_factory):
    """The folder ``t2i export onnx sd --fp16`` wrote for the tiny SD1 checkpoint."""
    from t2i.cli.main import cli

    out = tmp_path_factory.mktemp("sd1-fp16") / "export"
    args = ["export", "onnx", "sd", "--checkpoint", tiny_sd1["checkpoint"], "--fp16"]
    args += ["--option", f"tokenizer={tiny_sd1['tokenizer']}", "--option", "text_head_dim=16"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _graph_dtypes(values) -> dict[str, str]:
    import onnx

    return {
        v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
        for v in values
    }


@pytest.mark.slow
def test_fp16_files_are_float16_as_the_manifest_says(fp16_export):
    import onnx
    import onnxruntime as ort

    manifest = json.loads((fp16_export / "manifest.json").read_text())
    assert manifest["fp16"] is True
    assert set(manifest["models"]) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    for name, entry in manifest["models"].items():
        assert entry["fp16"] is True
        model = onnx.load(str(fp16_export / entry["file"]))
        weights = {onnx.helper.tensor_dtype_to_np_dtype(i.data_type).name
                   for i in model.graph.initializer if i.data_type in FLOATS}  # fmt: skip
        assert weights == {"float16"}, (name, weights)
        inputs, outputs = _graph_dtypes(model.graph.input), _graph_dtypes(model.graph.output)
        assert {i["name"]: i["dtype"] for i in entry["inputs"]} == inputs
        assert {o["name"]: o["dtype"] for o in entry["outputs"]} == outputs
        for value, dtype in {**inputs, **outputs}.items():
            if dtype.startswith("float"):
                expected = "float32" if (name, value) in FLOAT32_OUTPUTS else "float16"
                assert dtype == expected, (name, value, dtype)
        session = ort.InferenceSession(
            str(fp16_export / entry["file"]), providers=["CPUExecutionProvider"]
        )  # loads: one float type through every node
        assert [i.name for i in session.get_inputs()] == list(inputs)


@pytest.mark.slow
def test_fp16_models_and_image_match_fp32_torch(fp16_export, tiny_sd1):
    import onnxruntime as ort

    manifest = json.loads((fp16_export / "manifest.json").read_text())
    torch_pipe = Engine.build("sd", **tiny_sd1)
    modules = {
        m.name: m
        for c in loaded_components(torch_pipe)
        if hasattr(c.component, "export_spec")
        for m in c.component.export_spec()
    }
    for name, entry in manifest["models"].items():
        m = modules[entry["module"]]
        session = ort.InferenceSession(
            str(fp16_export / entry["file"]), providers=["CPUExecutionProvider"]
        )
        feed = {
            i["name"]: x.numpy().astype(i["dtype"])
            for i, x in zip(entry["inputs"], m.example_inputs, strict=True)
        }
        with torch.no_grad():
            expected = m.module(*m.example_inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for got, want in zip(session.run(None, feed), expected, strict=True):
            want = want.float().numpy()
            error = float(np.abs(got.astype(np.float32) - want).max())
            assert error <= FP16_TOLERANCE * max(1.0, float(np.abs(want).max())), (name, error)
    expected = torch_pipe("a red cube", **FIELDS)
    pipe = Engine.build(runtime="onnx", onnx_dir=fp16_export)
    assert pipe.onnx_torch_built == [] and pipe.onnx_torch_fallback == []
    got = pipe("a red cube", **FIELDS)
    assert pixel_distance(got.images, expected.images) <= IMAGE_TOLERANCE
    assert got.infotexts == expected.infotexts


@pytest.mark.parametrize("case", ["causal", "boolean", "float"])
def test_half_safe_attention_matches_sdpa(case):
    """The export-time attention equals ``F.scaled_dot_product_attention`` (float32 here), a
    fully masked row gives zeros, and a float mask still goes to the real function."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    mask = torch.rand(2, 1, 1, 5) > 0.3
    mask[..., 0] = True
    options = {
        "causal": {"is_causal": True},
        "boolean": {"attn_mask": mask},
        "float": {"attn_mask": torch.randn(2, 1, 5, 5)},
    }[case]
    original = F.scaled_dot_product_attention
    expected = original(q, k, v, **options)
    with half_safe_attention():
        got = F.scaled_dot_product_attention(q, k, v, **options)
        if case == "boolean":
            empty = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.zeros_like(mask))
            assert torch.equal(empty, torch.zeros_like(empty))
    assert F.scaled_dot_product_attention is original  # restored
    assert torch.allclose(got, expected, atol=1e-5)
    half = {n: (t.half() if isinstance(t, torch.Tensor) and t.is_floating_point() else t)
            for n, t in options.items()}  # fmt: skip
    with half_safe_attention():
        out = F.scaled_dot_product_attention(q.half(), k.half(), v.half(), **half)
    assert out.dtype == torch.float16


EMBEDDED_MEAN_TOLERANCE = 3.0
EMBEDDED_MAX_TOLERANCE = 24
"""Mean and largest per-pixel difference (of 255) between an embedded default's fp16 ORT images
and its fp32 torch ones: trained weights and guidance amplify float16 rounding (seen: mean
0.3 / 2.5, max 11 / 8 for ldm-shapes / imagen-shapes; the torch runtime's own float16
ldm-shapes differs from its float32 by 19)."""


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["ldm-shapes", "imagen-shapes"])
def test_embedded_defaults_export_fp16(recipe, tmp_path):
    """Each family's embedded default in fp16 (boolean attention masks in imagen-shapes' UNets
    and MiniLM): float16 weights only, every graph runs on ORT's CPU provider, the images are
    near the fp32 torch runtime's."""
    import importlib

    import onnx
    from t2i_onnx.exporter import export_recipe

    from t2i.testing import make_manager

    family = pytest.importorskip(f"t2i_{recipe.split('-')[0]}")
    plugins = make_manager(importlib.import_module(f"{family.__name__}.plugin"))
    out = tmp_path / recipe
    manifest = export_recipe(recipe, out, plugins=plugins, fp16=True)
    for name, entry in manifest["models"].items():
        model = onnx.load(str(out / entry["file"]))
        assert all(i.data_type != 1 for i in model.graph.initializer), name  # no float32
    fields = {"seed": 3, "steps": 3, "batch_size": 2}
    if recipe == "imagen-shapes":
        fields["sr_steps"] = 2
    prompt = "a red circle on the left"
    expected = Engine.build(recipe, plugins=plugins)(prompt, **fields)
    pipe = Engine.build(runtime="onnx", plugins=plugins, onnx_dir=out)
    got = pipe(prompt, **fields)
    assert pipe.onnx_torch_built == [] and got.infotexts == expected.infotexts
    for a, b in zip(got.images, expected.images, strict=True):
        diff = np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
        assert diff.mean() <= EMBEDDED_MEAN_TOLERANCE and diff.max() <= EMBEDDED_MAX_TOLERANCE
