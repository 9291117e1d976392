"""A standalone VAE in place of the checkpoint's own: A1111's "SD VAE" setting.

Users decode with a VAE file of their choice (``vae-ft-mse-840000-ema-pruned.safetensors``,
``sdxl_vae.safetensors``, a diffusers ``vae/`` folder such as ``sdxl-vae-fp16-fix``):
``Engine.build("ldm", checkpoint=..., vae=PATH)`` / ``--option vae=PATH``. The file is read
by :func:`t2i_ldm.checkpoint.load_vae_file` (CompVis or diffusers key names); what a
standalone file does not store (the latent scaling factor, GroupNorm groups, SDXL's fp32
upcast) comes from the checkpoint's own VAE config, as A1111 keeps the model's scaling. A VAE
whose latents do not fit the checkpoint's UNet (other latent channels or spatial factor) is
refused before its weights are read. The PNG records ``VAE hash`` (A1111's 10-hex short
SHA-256 of the file) and ``VAE`` (its file name).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch

from t2i.checkpoints import CheckpointError
from t2i_ldm.config import VAEConfig

AUTOMATIC, NONE = "Automatic", "None"
"""A1111's two ``sd_vae`` choices besides a file: ``Automatic`` (a VAE named after the
checkpoint beside it, else the checkpoint's own) and ``None`` (always the checkpoint's own)."""
BESIDE_SUFFIXES = (".vae.safetensors", ".vae.pt", ".vae.ckpt")
"""``MODEL.vae.safetensors`` beside ``MODEL.safetensors``: the VAE ``Automatic`` picks."""
INFOTEXT_KEYS = ("VAE hash", "VAE")
"""The PNG infotext fields of a chosen VAE, as A1111 names them."""


def vae_weights_file(path: str | os.PathLike) -> Path:
    """The weights file of a VAE file or diffusers VAE folder (``vae/`` itself or a pipeline
    folder holding one); a clear :class:`CheckpointError` when there is none."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError("no such VAE file or folder", path=path, fix="check the path")
    from t2i_ldm.diffusers_format import find_weights

    for folder in (path, path / "vae"):
        try:
            return find_weights(folder, "vae")
        except CheckpointError:
            continue
    raise CheckpointError(
        "the folder holds no VAE weights",
        path=path,
        fix="pass a VAE .safetensors file or a diffusers VAE folder "
        "(diffusion_pytorch_model.safetensors)",
    )


def check_fits(found: VAEConfig, template: VAEConfig, path: Path) -> None:
    """Refuse a VAE whose latents the checkpoint's UNet cannot take."""
    theirs = (found.embed_dim, found.factor)
    ours = (template.embed_dim, template.factor)
    if theirs != ours:
        raise CheckpointError(
            f"this VAE makes {theirs[0]}-channel latents at 1/{theirs[1]} scale; the "
            f"checkpoint's UNet works on {ours[0]}-channel latents at 1/{ours[1]}",
            path=path,
            fix="use a VAE made for this model family (SD 1.x/2.x: e.g. "
            "vae-ft-mse-840000-ema-pruned; SDXL: sdxl_vae), or leave vae unset",
        )


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, stamp: tuple, template: VAEConfig, dtype: Any, allow_pickle: bool):
    from t2i_ldm.checkpoint import load_vae_file

    where = Path(path)
    return load_vae_file(
        where,
        dtype=dtype,
        allow_pickle=allow_pickle,
        vae_config=template,
        check=lambda found: check_fits(found, template, where),
    )


def load_vae_override(
    path: str | os.PathLike,
    template: VAEConfig,
    *,
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
):
    """The :class:`~t2i_ldm.vae.AutoencoderKL` of ``path`` with ``template``'s scaling
    factor, groups and upcast (the checkpoint's VAE config), read once per file while it is
    unchanged."""
    if isinstance(dtype, str):  # a recipe's dtype option ("float16"), checked by the recipe
        dtype = getattr(torch, dtype)
    file = vae_weights_file(path)
    st = file.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    return _load_cached(str(file.resolve()), stamp, template, dtype, allow_pickle)


def vae_infotext(path: str | os.PathLike) -> dict[str, str]:
    """``{"VAE hash": ..., "VAE": ...}`` as A1111 writes them (file name with extension; a
    diffusers folder by its name)."""
    from t2i.files import short_hash

    file = vae_weights_file(path)
    name = file.name if Path(path).is_file() else Path(path).name
    return dict(zip(INFOTEXT_KEYS, (short_hash(file), name)))


def chosen_vae(
    vae: str | os.PathLike | None, checkpoint: str | os.PathLike, *, allow_pickle: bool = False
) -> str | None:
    """The VAE a ``vae`` option means: a path as given; ``None`` / ``"Automatic"`` a VAE
    beside a single-file checkpoint named after it (``MODEL.vae.safetensors``; ``.vae.pt`` /
    ``.vae.ckpt`` only with ``allow_pickle``), as A1111's Automatic, else None (the
    checkpoint's own); ``"None"``: None."""
    if vae == NONE:
        return None
    if vae not in (None, AUTOMATIC):
        return str(vae)
    path = Path(checkpoint)
    if not path.is_file():
        return None
    stem = path.name.rsplit(".", 1)[0]
    for suffix in BESIDE_SUFFIXES:
        beside = path.with_name(stem + suffix)
        if beside.is_file() and (suffix == BESIDE_SUFFIXES[0] or allow_pickle):
            import structlog

            structlog.get_logger(__name__).info("vae_beside_checkpoint", vae=str(beside))
            return str(beside)
    return None
