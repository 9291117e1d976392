"""One entry point for LDM weights: a single file or a diffusers folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from t2i.checkpoints import CheckpointError
from t2i_ldm.checkpoint import LdmModels, load_single_file


def load_ldm(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    prediction_type: str | None = None,
    allow_pickle: bool = False,
    use_ema: bool = False,
) -> LdmModels:
    """Load SD 1.x/2.x weights from ``path``: a diffusers folder (with ``model_index.json``)
    or a CompVis/A1111 single file (see :func:`t2i_ldm.checkpoint.load_single_file`)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointError(
                "folder has no model_index.json",
                path=path,
                fix="pass a diffusers StableDiffusionPipeline folder or a single .safetensors",
            )
        from t2i_ldm.diffusers_format import load_diffusers_folder

        return load_diffusers_folder(
            path,
            dtype=dtype,
            device=device,
            prediction_type=prediction_type,
            allow_pickle=allow_pickle,
        )
    return load_single_file(
        path,
        dtype=dtype,
        device=device,
        prediction_type=prediction_type,
        allow_pickle=allow_pickle,
        use_ema=use_ema,
    )
