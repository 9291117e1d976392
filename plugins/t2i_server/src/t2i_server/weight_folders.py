"""Scanning a folder of weights the way A1111 lists its model folders (VAEs, ControlNets):
``.safetensors`` files, diffusers folders (``config.json`` +
``diffusion_pytorch_model.safetensors``, listed once, their own files not again) and, with
``allow_pickle``, pickle files (else each is skipped with a log line saying how to let it
load). Another model folder (``config.json`` without those weights: an IP-Adapter's
``image_encoder/``) is not listed, nor are its files."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


def scan_weights(
    root: str | os.PathLike | None,
    *,
    kind: str,
    pickle_suffixes: tuple[str, ...],
    allow_pickle: bool = False,
) -> list[tuple[str, Path, bool]]:
    """``(name below root, path, is a pickle)`` of every weights entry below ``root``, sorted
    by name; none when ``root`` is None or missing (logged as ``{kind}_dir_missing``)."""
    if root is None:
        return []
    root = Path(root)
    if not root.is_dir():
        log.warning(f"{kind}_dir_missing", path=str(root))
        return []
    found: list[tuple[str, Path, bool]] = []
    folders: list[Path] = []
    for path in sorted(root.rglob("*")):
        if any(path.is_relative_to(f) for f in folders):
            continue  # a diffusers folder's own files
        name = path.relative_to(root).as_posix()
        if path.is_dir() and (path / "config.json").is_file():
            folders.append(path)  # a model folder: listed whole, or not at all
            if (path / DIFFUSERS_WEIGHTS).is_file():
                found.append((name, path, False))
        elif path.is_file() and path.suffix.lower() == ".safetensors":
            found.append((name, path, False))
        elif path.is_file() and path.suffix.lower() in pickle_suffixes:
            if allow_pickle:
                found.append((name, path, True))
            else:
                log.info(f"{kind}_skipped", path=str(path), reason="a pickle file: --allow-pickle")
    return found
