"""The models folder (``--ckpt-dir`` / ``$T2I_MODELS_DIR``): checkpoints the server lists in
``/sdapi/v1/sd-models`` and switches to, beside the recipes.

A scan walks the folder (A1111's ``--ckpt-dir``) and recognises, without loading weights:

- single files, ``.safetensors`` (header only) or ``.ckpt`` (the pickle's opcodes read, never
  run): Stable Diffusion 1.x/2.x (CompVis keys ``model.diffusion_model.*``) -> recipe ``ldm``;
- diffusers folders (``model_index.json``): ``StableDiffusionPipeline`` -> ``ldm``,
  ``IFPipeline`` (DeepFloyd IF stage I) -> ``imagen``;
- the engine's own model folders: ``model.json`` of ``t2i train ldm`` (``ldm-shapes``) or
  ``t2i train gan`` (``gan-shapes``), ``dalle.json`` (``dalle-shapes``),
  ``imagen-shapes.json`` (``imagen-shapes``); and min-dalle folders (``dalle-mini``).

Each entry has A1111's fields (``title`` "name [hash]", ``model_name``, ``hash``: the first 10
hex digits of the SHA-256 of the weights file, the infotext's ``Model hash`` for single files;
``sha256``, ``filename``, ``config``: a ``.yaml`` beside the file) and the recipe and family
that run it. A file that cannot be used (truncated, an unknown layout, a family whose plugin
is not installed) is skipped with a ``checkpoint_skipped`` log line and remembered, so that
asking to switch to it is a 4xx saying why.
"""

from __future__ import annotations

import json
import os
import pickletools
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import structlog

log = structlog.get_logger("t2i.server")

MODELS_DIR_ENV = "T2I_MODELS_DIR"
"""The models folder when ``--ckpt-dir`` is not given."""
SUFFIXES = (".safetensors", ".ckpt")
MAX_DEPTH = 6
"""Folder levels below the models folder that a scan enters."""
MAX_HEADER = 100 * 1024 * 1024
"""Largest safetensors header read (the format's own limit)."""
MAX_PICKLE_OPS = 5_000_000
"""Opcodes of a ``.ckpt`` pickle read before giving up on finding its keys."""
SD_PREFIX = "model.diffusion_model."
SDXL_TEXT_PREFIX = "conditioner.embedders."
"""SDXL single files (A1111 / ComfyUI layout) keep both text towers under this prefix."""
FAMILIES = {"ldm": "diffusion", "imagen": "diffusion", "ldm-shapes": "diffusion",
            "imagen-shapes": "diffusion", "gan-shapes": "generator", "dalle-shapes": "tokens",
            "dalle-mini": "tokens"}  # fmt: skip
"""The family (model contract) of the recipes a scanned file can run on."""


class UnusableCheckpoint(ValueError):
    """A file or folder in the models folder that no installed recipe can run (why)."""


@attrs.frozen
class Layout:
    """What a scan recognised: the recipe that runs it, how, and the file its hash is of."""

    recipe: str
    kind: str
    weights: Path
    pickle: bool = False


@attrs.frozen
class Checkpoint:
    """One usable entry of the models folder.

    Attributes:
        path: the file or folder (what the recipe's ``checkpoint=`` gets).
        name: its path below the models folder, ``/``-separated (A1111's ``name``).
        layout: what the scan recognised.
        sha256: the SHA-256 of ``layout.weights``.
        config: a ``.yaml`` of the same name beside the file, or None.
    """

    path: Path
    name: str
    layout: Layout
    sha256: str
    config: Path | None = None

    @property
    def hash(self) -> str:
        return self.sha256[:10]

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash}]"

    @property
    def model_name(self) -> str:
        """A1111's: the name with separators as ``_``, without the extension."""
        flat = self.name.replace("/", "_")
        return flat[: -len(self.path.suffix)] if self.path.is_file() and self.path.suffix else flat

    @property
    def recipe(self) -> str:
        return self.layout.recipe

    @property
    def family(self) -> str:
        return FAMILIES.get(self.recipe, "")

    def options(self) -> dict[str, Any]:
        """The recipe options that run it (``checkpoint=``; ``allow_pickle`` for ``.ckpt``)."""
        out: dict[str, Any] = {"checkpoint": str(self.path)}
        if self.layout.pickle:
            out["allow_pickle"] = True
        return out

    def names(self) -> tuple[str, ...]:
        """What a client may call it: title, name, model name, absolute path."""
        return (self.title, self.name, self.model_name, str(self.path))

    def as_a1111(self) -> dict[str, Any]:
        """The ``/sdapi/v1/sd-models`` entry (A1111's fields, then the recipe and family)."""
        return {
            "title": self.title,
            "model_name": self.model_name,
            "hash": self.hash,
            "sha256": self.sha256,
            "filename": str(self.path),
            "config": str(self.config) if self.config else None,
            "recipe": self.recipe,
            "family": self.family,
            "format": self.layout.kind,
        }


@attrs.define
class ModelsFolder:
    """A scan's result: the usable entries and the skipped ones (path -> why)."""

    root: Path | None
    checkpoints: list[Checkpoint] = attrs.Factory(list)
    skipped: dict[str, str] = attrs.Factory(dict)

    def find(self, name: str) -> Checkpoint | None:
        """The entry called ``name`` (title, name, model name or path), or None."""
        text = name.strip()
        bare = text.split(" [")[0]
        for ckpt in self.checkpoints:
            if text in ckpt.names() or bare in (ckpt.name, ckpt.model_name):
                return ckpt
        return None

    def why_skipped(self, name: str) -> str | None:
        """Why ``name`` (a path or a name below the root) was skipped, or None."""
        bare = name.strip().split(" [")[0]
        for path, reason in self.skipped.items():
            rel = _relative(Path(path), self.root) if self.root else path
            if bare in (path, rel, Path(rel).stem, rel.replace("/", "_")):
                return f"{rel}: {reason}"
        return None


def models_dir_from(option: str | os.PathLike | None) -> Path | None:
    """``--ckpt-dir`` if given, else ``$T2I_MODELS_DIR``; None when neither is set."""
    value = option if option is not None else os.environ.get(MODELS_DIR_ENV)
    return Path(value).expanduser() if value else None


def scan(root: str | os.PathLike | None, has_recipe: Callable[[str], bool]) -> ModelsFolder:
    """Every checkpoint below ``root`` that an installed recipe (``has_recipe``) runs."""
    if root is None:
        return ModelsFolder(None)
    root = Path(root)
    out = ModelsFolder(root)
    if not root.is_dir():
        log.warning("models_dir_missing", path=str(root))
        return out
    for path in _candidates(root):
        try:
            layout = identify(path)
            if not has_recipe(layout.recipe):
                raise UnusableCheckpoint(
                    f"a {layout.kind} runs on recipe {layout.recipe!r}, which no installed "
                    "plugin registers"
                )
            ckpt = _entry(path, root, layout)
        except (UnusableCheckpoint, OSError) as exc:
            reason = str(exc) if isinstance(exc, UnusableCheckpoint) else f"unreadable ({exc})"
            out.skipped[str(path)] = reason
            log.warning("checkpoint_skipped", path=str(path), reason=reason)
            continue
        out.checkpoints.append(ckpt)
    out.checkpoints.sort(key=lambda c: c.name.lower())
    return out


def _entry(path: Path, root: Path, layout: Layout) -> Checkpoint:
    from t2i.files import short_hash

    config = path.with_suffix(".yaml") if path.is_file() else None
    return Checkpoint(
        path=path.resolve(),
        name=_relative(path, root),
        layout=layout,
        sha256=short_hash(layout.weights, 64),
        config=config if config is not None and config.is_file() else None,
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _candidates(root: Path) -> Iterator[Path]:
    """Model folders (not entered further) and single files, walking at most MAX_DEPTH."""
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            children = sorted(folder.iterdir())
        except OSError as exc:
            log.warning("checkpoint_skipped", path=str(folder), reason=f"unreadable ({exc})")
            continue
        for child in children:
            if child.name.startswith("."):
                continue
            if child.is_dir():
                if is_model_folder(child):
                    yield child
                elif depth + 1 < MAX_DEPTH:
                    stack.append((child, depth + 1))
            elif child.suffix.lower() in SUFFIXES:
                yield child


FOLDER_MARKERS = ("model_index.json", "model.json", "dalle.json", "imagen-shapes.json")
MINI_FILES = ("encoder.pt", "decoder.pt", "detoker.pt")


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` holds a model's marker file (it is then one entry, not scanned into)."""
    return any((path / m).is_file() for m in FOLDER_MARKERS) or all(
        (path / m).is_file() for m in MINI_FILES
    )


def identify(path: Path) -> Layout:
    """The layout of a file or model folder, read from headers and JSON only.

    Raises:
        UnusableCheckpoint: truncated, unreadable, or no layout an engine recipe runs.
    """
    if path.is_dir():
        return _identify_folder(path)
    keys, pickled = file_keys(path)
    if any(k.startswith(SD_PREFIX) for k in keys):
        xl = any(k.startswith(SDXL_TEXT_PREFIX) for k in keys)
        kind = "Stable Diffusion XL single file" if xl else "Stable Diffusion single file"
        return Layout("ldm", kind, path, pickle=pickled)
    sample = ", ".join(sorted(keys)[:3]) or "none"
    raise UnusableCheckpoint(f"unknown layout (keys like {sample}): no recipe runs it")


def _identify_folder(path: Path) -> Layout:
    if (path / "model_index.json").is_file():
        return _diffusers(path)
    if (path / "model.json").is_file():
        spec = _json(path / "model.json")
        if spec.get("family") == "gan":
            return _own(path, "gan-shapes", "t2i gan model folder", "netG.safetensors")
        if {"unet", "vae", "text"} <= set(spec):
            return _own(path, "ldm-shapes", "t2i ldm model folder", "unet.safetensors")
        raise UnusableCheckpoint("model.json names no family this engine runs")
    if (path / "dalle.json").is_file():
        if _json(path / "dalle.json").get("family") != "dalle":
            raise UnusableCheckpoint("dalle.json is not a DALL-E model spec")
        return _own(path, "dalle-shapes", "t2i dalle model folder", "transformer.safetensors")
    if (path / "imagen-shapes.json").is_file():
        return _own(path, "imagen-shapes", "t2i imagen model folder", "base.safetensors")
    return Layout("dalle-mini", "min-dalle folder", _weights(path, "decoder.pt"))


DIFFUSERS = {
    "StableDiffusionPipeline": "ldm",
    "StableDiffusionInpaintPipeline": "ldm",
    "StableDiffusionXLPipeline": "ldm",
    "StableDiffusionXLImg2ImgPipeline": "ldm",
    "IFPipeline": "imagen",
}
"""Diffusers pipeline classes (``model_index.json`` ``_class_name``) -> the recipe."""


def _diffusers(path: Path) -> Layout:
    name = _json(path / "model_index.json").get("_class_name")
    if name not in DIFFUSERS:
        runs = ", ".join(DIFFUSERS)
        raise UnusableCheckpoint(f"diffusers pipeline {name!r} is none this engine runs ({runs})")
    unet = path / "unet"
    for file in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (unet / file).is_file():
            if file.endswith(".safetensors"):
                safetensors_keys(unet / file)  # a truncated UNet is skipped here
            return Layout(DIFFUSERS[name], f"diffusers {name}", unet / file)
    raise UnusableCheckpoint("diffusers folder without unet/diffusion_pytorch_model.*")


def _own(path: Path, recipe: str, kind: str, weights: str) -> Layout:
    file = _weights(path, weights)
    safetensors_keys(file)
    return Layout(recipe, kind, file)


def _weights(path: Path, name: str) -> Path:
    if not (path / name).is_file():
        raise UnusableCheckpoint(f"model folder without its weights file {name}")
    return path / name


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UnusableCheckpoint(f"{path.name} is not JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise UnusableCheckpoint(f"{path.name} is not a JSON object")
    return value


def file_keys(path: Path) -> tuple[list[str], bool]:
    """The tensor names of a single-file checkpoint and whether it is a pickle."""
    from t2i.checkpoints import LEGACY_PICKLE, SAFETENSORS, ZIP_PICKLE, detect_format

    fmt = detect_format(path)
    if fmt == SAFETENSORS:
        return safetensors_keys(path), False
    if fmt in (ZIP_PICKLE, LEGACY_PICKLE):
        return pickle_strings(path, fmt == ZIP_PICKLE), True
    raise UnusableCheckpoint("neither safetensors nor a torch pickle (truncated or corrupt?)")


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a safetensors header; the data must be as long as it says.

    Raises:
        UnusableCheckpoint: no header, or a file shorter than its tensors (truncated).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if not 2 <= length <= min(size - 8, MAX_HEADER):
            raise UnusableCheckpoint("not a safetensors file (no header)")
        try:
            header = json.loads(fh.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise UnusableCheckpoint("safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise UnusableCheckpoint("safetensors header is not a JSON object")
    tensors = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    ends = [v.get("data_offsets", [0, 0])[-1] for v in tensors.values()]
    need = 8 + length + max((e for e in ends if isinstance(e, int)), default=0)
    if size < need:
        raise UnusableCheckpoint(f"truncated: {size} bytes, its header needs {need}")
    return list(tensors)


def pickle_strings(path: Path, zipped: bool) -> list[str]:
    """The strings a ``.ckpt``'s pickle holds (its keys among them), read opcode by opcode."""
    import io

    try:
        if zipped:
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()[: 64 * 1024 * 1024]
    except (zipfile.BadZipFile, StopIteration, OSError, EOFError) as exc:
        raise UnusableCheckpoint(f"unreadable torch pickle ({type(exc).__name__})") from None
    out: list[str] = []
    stream = io.BytesIO(data)
    try:  # a legacy torch.save is 4 pickles (magic, protocol, sys info, the object)
        for _ in range(1 if zipped else 4):
            if stream.tell() >= len(data):
                break
            for i, (op, arg, _) in enumerate(pickletools.genops(stream)):
                if i > MAX_PICKLE_OPS:
                    break
                if isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                    out.append(arg)
    except (ValueError, EOFError, struct.error):
        if not out:
            raise UnusableCheckpoint("corrupt pickle stream") from None
    return out
