"""The LoRA folder (``--lora-dir``): what ``<lora:NAME:w>`` in a prompt finds, listed as A1111.

Every pipeline the server builds gets ``lora_dir=`` the folder, so a prompt's
``<lora:NAME:0.8>`` merges ``NAME.safetensors`` (:func:`t2i.lora.find_lora`) on any family
the engine adapts. ``/sdapi/v1/loras`` lists the folder as A1111's Lora extension does:
``[{name, alias, path, metadata}]``, ``name`` the file's stem, ``alias`` the kohya trainer's
``ss_output_name`` when the file records one, ``metadata`` the safetensors header's
``__metadata__`` (values that hold JSON objects parsed, as A1111 reads them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import structlog

from t2i.lora import LORA_DIR_ENV

log = structlog.get_logger(__name__)


def lora_dir_from(option: str | os.PathLike | None) -> Path | None:
    """``--lora-dir`` if given, else ``$T2I_LORA_DIR``; None when neither is set."""
    value = option if option is not None else os.environ.get(LORA_DIR_ENV)
    return Path(value).expanduser() if value else None


def _metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        raw = f.metadata() or {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str) and value.startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out


def lora_entries(folder: Path | None) -> list[dict[str, Any]]:
    """The folder's LoRA files as ``/sdapi/v1/loras`` entries, sorted by name; a file whose
    header cannot be read is left out with a log line."""
    if folder is None or not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.rglob("*.safetensors")):
        try:
            metadata = _metadata(path)
        except Exception as exc:  # a truncated or foreign file: listed nowhere, logged
            log.warning("lora_skipped", path=str(path), reason=str(exc))
            continue
        alias = metadata.get("ss_output_name") or path.stem
        entry = {"name": path.stem, "alias": alias, "path": str(path.resolve())}
        out.append({**entry, "metadata": metadata})
    return out
