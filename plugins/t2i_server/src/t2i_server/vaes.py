"""The VAE folder (``--vae-dir``): A1111's "SD VAE" setting over the API.

``/sdapi/v1/sd-vae`` lists the folder's VAEs (``[{model_name, filename}]``, as A1111): its
``.safetensors`` files, diffusers VAE folders (``config.json`` + ``diffusion_pytorch_model
.safetensors``) and, with ``--allow-pickle``, ``.pt`` / ``.ckpt`` files. ``sd_vae`` (the
``/options`` setting, or ``override_settings`` of one request) names one of them by its
``model_name`` (the path below the folder) or file name; ``Automatic`` (the default) leaves
the choice to the recipe (ldm: ``MODEL.vae.safetensors`` beside a single file, else the
checkpoint's own), ``None`` is always the checkpoint's own. A chosen VAE reaches a recipe
that takes ``vae=`` (the ldm family's); another model ignores the setting, and a request
that names a VAE for it is refused, saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import structlog

log = structlog.get_logger(__name__)

VAE_DIR_ENV = "T2I_VAE_DIR"
AUTOMATIC, NONE = "Automatic", "None"
"""The two ``sd_vae`` values that leave each checkpoint its own VAE."""
PICKLE_SUFFIXES = (".pt", ".ckpt")
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


@attrs.frozen
class VaeFile:
    """One VAE of the folder: ``name`` (path below the folder, ``/``-separated) and ``path``."""

    name: str
    path: Path
    pickle: bool = False

    def as_a1111(self) -> dict[str, str]:
        """Its ``/sdapi/v1/sd-vae`` entry."""
        return {"model_name": self.name, "filename": str(self.path.resolve())}


def vae_dir_from(option: str | os.PathLike | None) -> Path | None:
    """``--vae-dir`` if given, else ``$T2I_VAE_DIR``; None when neither is set."""
    value = option if option is not None else os.environ.get(VAE_DIR_ENV)
    return Path(value).expanduser() if value else None


def scan_vaes(root: str | os.PathLike | None, *, allow_pickle: bool = False) -> list[VaeFile]:
    """The VAEs below ``root``, sorted by name (pickle files only with ``allow_pickle``;
    without it each is skipped with a log line saying how to let it load)."""
    if root is None:
        return []
    root = Path(root)
    if not root.is_dir():
        log.warning("vae_dir_missing", path=str(root))
        return []
    found, folders = [], []
    for path in sorted(root.rglob("*")):
        if any(path.is_relative_to(f) for f in folders):
            continue  # a diffusers folder's own files
        name = path.relative_to(root).as_posix()
        if path.is_dir() and all((path / f).is_file() for f in ("config.json", DIFFUSERS_WEIGHTS)):
            found.append(VaeFile(name, path))
            folders.append(path)
        elif path.is_file() and path.suffix == ".safetensors":
            found.append(VaeFile(name, path))
        elif path.is_file() and path.suffix in PICKLE_SUFFIXES:
            if allow_pickle:
                found.append(VaeFile(name, path, pickle=True))
            else:
                log.info("vae_skipped", path=str(path), reason="a pickle file: --allow-pickle")
    return found


def find_vae(vaes: list[VaeFile], name: str) -> VaeFile | None:
    """The VAE called ``name``: its ``model_name``, file name, or stem."""
    for test in (lambda v: v.name, lambda v: v.path.name, lambda v: v.path.stem):
        for vae in vaes:
            if test(vae) == name:
                return vae
    return None
