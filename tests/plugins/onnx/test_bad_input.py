"""Bad input gets a clear error before any model work: a folder that is not an export, a
manifest of another format version, a missing model file, an execution provider that is not
installed (naming the package), a recipe that is not the export's, an existing --out."""

import json
import shutil

import pytest
import torch
from t2i_onnx.exporter import export_recipe
from t2i_onnx.manifest import OnnxExportError
from t2i_onnx.runtime import providers_for

from t2i.engine import Engine, EngineError


def _copy(toy_exports, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(toy_exports["toy-diffusion"], folder)
    return folder


def _build(folder, manager, **options):
    return Engine.build(runtime="onnx", plugins=manager, onnx_dir=folder, **options)


def test_a_folder_that_is_not_an_export(tmp_path, toy_manager):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(OnnxExportError, match=r"not a t2i ONNX export.*t2i export onnx"):
        _build(tmp_path, toy_manager)
    with pytest.raises(OnnxExportError, match="no such folder"):
        _build(tmp_path / "absent", toy_manager)


def test_a_manifest_of_another_version(toy_exports, tmp_path, toy_manager):
    folder = _copy(toy_exports, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OnnxExportError, match=r"format version 99.*reads version 1"):
        _build(folder, toy_manager)


def test_a_missing_model_file(toy_exports, tmp_path, toy_manager):
    folder = _copy(toy_exports, tmp_path)
    (folder / "denoiser" / "model.onnx").unlink()
    with pytest.raises(OnnxExportError, match="'denoiser' is missing its file denoiser/model"):
        _build(folder, toy_manager)


def test_an_execution_provider_that_is_not_installed(toy_exports, toy_manager):
    with pytest.raises(
        OnnxExportError, match=r"CUDAExecutionProvider.*pip install onnxruntime-gpu"
    ):
        providers_for(torch.device("cuda"), available=["CPUExecutionProvider"])
    with pytest.raises(OnnxExportError, match=r"OpenVINO.*pip install onnxruntime-openvino"):
        _build(toy_exports["toy-diffusion"], toy_manager, onnx_provider="OpenVINOExecutionProvider")


def test_another_recipe_and_no_folder(toy_exports, toy_manager):
    with pytest.raises(OnnxExportError, match="export of recipe 'toy-diffusion', not 'toy-gan'"):
        Engine.build(
            "toy-gan", runtime="onnx", plugins=toy_manager, onnx_dir=toy_exports["toy-diffusion"]
        )
    with pytest.raises(OnnxExportError, match="onnx_dir=DIR"):
        Engine.build("toy-gan", runtime="onnx", plugins=toy_manager)
    with pytest.raises(EngineError, match="unknown runtime 'tensorrt'"):
        Engine.build("toy-gan", runtime="tensorrt", plugins=toy_manager)


def test_an_existing_folder_is_refused_and_never_half_overwritten(
    tmp_path, toy_manager, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OnnxExportError, match="exists; pass --overwrite"):
        export_recipe("toy-gan", out, plugins=toy_manager)
    from t2i_onnx import exporter

    def fail(*args, **kwargs):
        raise RuntimeError("export failed half way")

    monkeypatch.setattr(exporter, "_finish_manifest", fail)
    with pytest.raises(RuntimeError, match="half way"):
        export_recipe("toy-gan", out, plugins=toy_manager, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial sibling left
    monkeypatch.undo()
    export_recipe("toy-gan", out, plugins=toy_manager, overwrite=True)
    assert (out / "manifest.json").is_file() and not (out / "keep.txt").exists()


def test_bad_opset(tmp_path, toy_manager):
    with pytest.raises(OnnxExportError, match="--opset 9"):
        export_recipe("toy-gan", tmp_path / "x", plugins=toy_manager, opset=9)
