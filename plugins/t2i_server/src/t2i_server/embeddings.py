"""The embeddings folder (``--embeddings-dir``): textual inversion over the API, as A1111.

Every pipeline whose recipe takes ``embeddings_dir=`` (the ldm family's) gets the folder, so a
prompt uses an embedding by its file name (``a photo in my-style``). ``/sdapi/v1/embeddings``
lists the folder as A1111 does, ``{"loaded": {name: {step, sd_checkpoint,
sd_checkpoint_name, shape, vectors}}, "skipped": {name: ...}}``, read from each
``.safetensors`` header (``emb_params`` (n, D); SDXL's ``clip_l`` + ``clip_g``, the shape
their widths summed, as A1111 reports it; diffusers' one ``{token: (D,)}``) without loading
a tensor. Pickle files
(``.pt`` / ``.bin``) are listed as loaded only with ``--allow-pickle`` (read then by the
recipe with ``torch.load(weights_only=True)``); without it they are skipped. The model skips
what this lists as skipped too (A1111's rule): the folder never stops a model from loading,
and a prompt naming a skipped embedding is refused with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EMBEDDINGS_DIR_ENV = "T2I_EMBEDDINGS_DIR"
PICKLE_SUFFIXES = (".pt", ".bin")


def embeddings_dir_from(option: str | os.PathLike | None) -> Path | None:
    """``--embeddings-dir`` if given, else ``$T2I_EMBEDDINGS_DIR``; None when neither."""
    value = option if option is not None else os.environ.get(EMBEDDINGS_DIR_ENV)
    return Path(value).expanduser() if value else None


def _entry(shape: int | None, vectors: int | None) -> dict[str, Any]:
    return {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
            "shape": shape, "vectors": vectors}  # fmt: skip


def _safetensors_entry(path: Path) -> dict[str, Any]:
    """Shape and vector count from the header; ValueError when it is no embedding."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    if "emb_params" in shapes and len(shapes["emb_params"]) == 2:
        n, width = shapes["emb_params"]
        return _entry(width, n)
    if all(k in shapes and len(shapes[k]) == 2 for k in ("clip_l", "clip_g")):
        return _entry(shapes["clip_l"][1] + shapes["clip_g"][1], shapes["clip_l"][0])
    if len(shapes) == 1 and len(only := next(iter(shapes.values()))) in (1, 2):
        return _entry(only[-1], 1 if len(only) == 1 else only[0])  # diffusers: {token: (D,)}
    raise ValueError("no emb_params, clip_l + clip_g or single {token: vector}: not an embedding")


def embedding_entries(folder: Path | None, *, allow_pickle: bool) -> dict[str, dict]:
    """``{"loaded": ..., "skipped": ...}`` of the folder (empty without one)."""
    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    if folder is None or not folder.is_dir():
        return {"loaded": loaded, "skipped": skipped}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            try:
                loaded[path.stem] = _safetensors_entry(path)
            except Exception as exc:  # unreadable or not an embedding: said, not fatal
                skipped[path.stem] = {**_entry(None, None), "reason": str(exc)}
        elif suffix in PICKLE_SUFFIXES:
            if allow_pickle:
                loaded[path.stem] = _entry(None, None)  # read only when a model loads it
            else:
                reason = "a pickle file: restart with --allow-pickle, or convert it"
                skipped[path.stem] = {**_entry(None, None), "reason": reason}
    return {"loaded": loaded, "skipped": skipped}


def holds_pickles(folder: Path | None) -> bool:
    """Whether the folder holds a pickle embedding (the recipe then needs allow_pickle)."""
    if folder is None or not folder.is_dir():
        return False
    return any(p.suffix.lower() in PICKLE_SUFFIXES for p in folder.rglob("*") if p.is_file())
