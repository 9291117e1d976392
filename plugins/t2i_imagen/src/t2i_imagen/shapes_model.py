"""The embedded default ``imagen-shapes``: two Efficient U-Net stages in safetensors files.

A model folder holds ``base.safetensors`` (32 px) and ``sr.safetensors`` (32 -> 64 px),
written by ``t2i train imagen`` (:func:`t2i_imagen.trainables.save_stage`): fp16 weights
with the architecture, prediction type, size and training record in the file's metadata.
The text encoder is the frozen MiniLM of the core (``minilm``), so a folder carries no
text weights.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import attrs
import torch

from t2i.checkpoints import CheckpointError

WEIGHTS_DIR = Path(__file__).parent / "weights" / "imagen-shapes"
"""Where the shipped folder goes (``base.safetensors``, ``sr.safetensors``, record JSON)."""


@attrs.frozen(eq=False)
class ShapesStage:
    """One loaded stage: the network and what its file says about it."""

    unet: Any
    stage: str
    prediction_type: str
    size: int
    training: dict[str, Any]


def stage_path(folder: str | os.PathLike, stage: str) -> Path:
    """``folder/<stage>.safetensors`` (a file path is taken as is)."""
    path = Path(folder)
    return path if path.is_file() else path / f"{stage}.safetensors"


def default_weights() -> Path:
    """The shipped folder, or a CheckpointError saying how to get one."""
    if not (WEIGHTS_DIR / "base.safetensors").is_file():
        raise CheckpointError(
            "imagen-shapes ships no trained weights in this install",
            path=WEIGHTS_DIR,
            fix="train both stages (t2i train imagen --stage base / --stage sr --out runs/im) "
            "and pass checkpoint=runs/im/model",
        )
    return WEIGHTS_DIR


@attrs.frozen
class StageInfo:
    """What a stage file's metadata says, read without building its network."""

    stage: str
    size: int
    text_dim: int
    prediction_type: str


def stage_info(folder: str | os.PathLike | None, stage: str) -> StageInfo:
    """The metadata of stage ``stage`` of a model folder, checked as :func:`load_stage` checks
    it, without reading the weights (recipes check a pair with it; no network code runs)."""
    from safetensors import safe_open

    path = stage_path(folder if folder is not None else default_weights(), stage)
    if not path.is_file():
        raise CheckpointError(
            f"no {stage} stage here", path=path, fix="pass a folder from t2i train imagen"
        )
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    _check_meta(meta, str(path), stage)
    config = json.loads(meta["config"])
    return StageInfo(stage, int(meta["size"]), int(config["text_dim"]), meta["prediction_type"])


def _check_meta(meta: dict, path: str, stage: str) -> None:
    if meta.get("format") != "t2i-imagen-stage":
        raise CheckpointError(
            "not an imagen-shapes stage file (no t2i-imagen-stage metadata)",
            path=path,
            fix="pass a folder written by t2i train imagen",
        )
    if meta.get("stage") != stage:
        raise CheckpointError(
            f"this is the {meta.get('stage')!r} stage, given as the {stage!r} stage",
            path=path,
            fix=f"pass the {stage}.safetensors of the folder",
        )


@functools.lru_cache(maxsize=4)
def _load(path: str, stamp: tuple, stage: str) -> ShapesStage:
    from safetensors import safe_open

    from t2i_imagen.efficient_unet import EfficientUNet, EfficientUNetConfig

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    _check_meta(meta, path, stage)
    unet = EfficientUNet(EfficientUNetConfig.from_dict(json.loads(meta["config"])))
    unet.load_state_dict({k: v.float() for k, v in state.items()})
    unet.eval().requires_grad_(False)
    training = json.loads(meta.get("training", "{}"))
    return ShapesStage(unet, stage, meta["prediction_type"], int(meta["size"]), training)


def load_stage(folder: str | os.PathLike | None, stage: str) -> ShapesStage:
    """Stage ``stage`` of a model folder (default: the shipped one), read once per file."""
    path = stage_path(folder if folder is not None else default_weights(), stage)
    if not path.is_file():
        raise CheckpointError(
            f"no {stage} stage here", path=path, fix="pass a folder from t2i train imagen"
        )
    st = path.stat()
    return _load(str(path.resolve()), (st.st_mtime_ns, st.st_size), stage)


def create_denoiser(*, checkpoint: str | os.PathLike | None = None, stage: str = "base"):
    """Factory of ``imagen.shapes_unet``: a stage as an :class:`ImagenDenoiser`."""
    from t2i_imagen.denoiser import EfficientUNetPredictor, ImagenDenoiser

    loaded = load_stage(checkpoint, stage)
    unet = loaded.unet
    return ImagenDenoiser(
        EfficientUNetPredictor(unet),
        unet,
        loaded.prediction_type,
        super_resolution=stage == "sr",
        text_width=unet.config.text_dim,
    )


def parameter_count(unet: torch.nn.Module) -> int:
    return sum(p.numel() for p in unet.parameters())
