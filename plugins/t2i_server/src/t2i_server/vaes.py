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

VAE_DIR_ENV = "T2I_VAE_DIR"
AUTOMATIC, NONE = "Automatic", "None"
"""The two ``sd_vae`` values that leave each checkpoint its own VAE."""
PICKLE_SUFFIXES = (".pt", ".ckpt")


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
    from t2i_server.weight_folders import scan_weights

    entries = scan_weights(
        root, kind="vae", pickle_suffixes=PICKLE_SUFFIXES, allow_pickle=allow_pickle
    )
    return [VaeFile(name, path, pickle=pickle) for name, path, pickle in entries]


def find_vae(vaes: list[VaeFile], name: str) -> VaeFile | None:
    """The VAE called ``name``: its ``model_name``, file name, or stem."""
    for test in (lambda v: v.name, lambda v: v.path.name, lambda v: v.path.stem):
        for vae in vaes:
            if test(vae) == name:
                return vae
    return None
