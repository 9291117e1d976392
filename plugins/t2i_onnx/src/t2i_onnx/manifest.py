"""``manifest.json`` of an ONNX export: what a runtime needs besides the ``.onnx`` files.

Layout of an export folder (Optimum's: one folder per model)::

    DIR/manifest.json
    DIR/<model>/model.onnx            (+ model.onnx.data past 2 GB)
    DIR/tokenizer/...                 (tokenizer files, when the tokenizer can save them)

The manifest names the format and its version, the recipe and the options it was built with,
each model (file, the graph node and component it came from, its inputs and outputs with
dtypes, shapes and dynamic axes) and the non-neural parts: tokenizer, the recipe's graph JSON
and request defaults (sampler, schedule, steps, guidance).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t2i.engine import EngineError

FORMAT = "t2i-onnx"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class OnnxExportError(EngineError):
    """An export folder, option or model that cannot be used; the message says the fix."""


def model_file(name: str) -> str:
    """Path of model ``name`` inside an export folder (``unet/model.onnx``)."""
    return f"{name}/model.onnx"


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The checked manifest of export folder ``folder``; :class:`OnnxExportError` if the folder
    is not an export of this format version or misses a model file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OnnxExportError(
            f"{folder}: no such folder; make one with `t2i export onnx RECIPE --out {folder}`"
        )
    path = folder / MANIFEST
    if not path.is_file():
        raise OnnxExportError(
            f"{folder} is not a t2i ONNX export (no {MANIFEST}); make one with "
            f"`t2i export onnx RECIPE --out DIR`"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise OnnxExportError(f"{path}: not valid JSON ({exc}); export again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OnnxExportError(f"{path} is not a t2i ONNX manifest (format is not {FORMAT!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise OnnxExportError(
            f"{path}: export format version {version!r}, this t2i_onnx reads version "
            f"{FORMAT_VERSION}; export again with this version (`t2i export onnx`)"
        )
    for name, model in manifest.get("models", {}).items():
        file = folder / model["file"]
        if not file.is_file():
            raise OnnxExportError(
                f"{folder}: model {name!r} is missing its file {model['file']}; the export is "
                f"incomplete: export again"
            )
    return manifest
