"""DeepFloyd IF checkpoints in the diffusers layout (``save_pretrained`` folders).

A stage I folder (``model_index.json`` ``_class_name: IFPipeline``) holds ``unet/``,
``scheduler/``, ``text_encoder/`` (T5) and ``tokenizer/``; a stage II folder
(``IFSuperResolutionPipeline``) holds ``unet/`` (6 input channels, noise-level class
embedding), ``scheduler/`` and ``image_noising_scheduler/`` and usually no text encoder
(it shares stage I's embeddings). Weights are ``diffusion_pytorch_model.safetensors`` or
the ``fp16`` variant ``diffusion_pytorch_model.fp16.safetensors`` (either may be sharded
with an ``.index[.fp16].json``); pickled ``.bin`` weights are refused.

:func:`read_stage` reads only the JSON files (cheap: the structural checks of a cascade run
on it before any weight is read) and imports no network code (a deployment runtime builds the
recipe with it); :func:`load_unet` reads the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch

from t2i.checkpoints import CheckpointError
from t2i_imagen.if_config import IFUNetConfig

if TYPE_CHECKING:
    from t2i_imagen.if_unet import IFUNet

STAGE_CLASSES = {"IFPipeline": "I", "IFSuperResolutionPipeline": "II"}
WEIGHTS = "diffusion_pytorch_model"


@attrs.frozen
class IFStage:
    """What a folder's JSON files say about one IF stage."""

    folder: Path
    stage: str  # "I" or "II"
    unet: IFUNetConfig
    scheduler: dict[str, Any]

    @property
    def sample_size(self) -> int:
        return int(self.unet.sample_size or 64)

    @property
    def data_range(self) -> tuple[float, float]:
        """The samples' range: ``[-r, r]`` with the scheduler's ``clip_sample_range`` (1)."""
        r = float(self.scheduler.get("clip_sample_range", 1.0))
        return (-r, r)

    @property
    def thresholding(self) -> dict[str, float]:
        """The folder's dynamic-thresholding settings as ``DynamicThresholding`` options."""
        return {
            "percentile": float(self.scheduler.get("dynamic_thresholding_ratio", 0.995)),
            "max_value": float(self.scheduler.get("sample_max_value", 1.0)),
        }


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError("missing file", path=path, fix="pass a diffusers IF folder") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"not JSON: {exc}", path=path, fix="re-save the folder") from None


def read_stage(folder: str | os.PathLike) -> IFStage:
    """The stage of an IF folder from its JSON files (no weights read)."""
    path = Path(folder)
    if not path.is_dir():
        raise CheckpointError("not a folder", path=path, fix="pass a diffusers IF pipeline folder")
    index = _json(path / "model_index.json")
    name = index.get("_class_name")
    if name not in STAGE_CLASSES:
        raise CheckpointError(
            f"model_index.json names {name!r}, not an IF pipeline ({', '.join(STAGE_CLASSES)})",
            path=path,
            fix="pass a DeepFloyd IF stage I or stage II folder",
        )
    try:
        unet = IFUNetConfig.from_diffusers(_json(path / "unet" / "config.json"))
    except ValueError as exc:
        raise CheckpointError(str(exc), path=path / "unet", fix="pass an IF UNet") from None
    scheduler = _json(path / "scheduler" / "scheduler_config.json")
    return IFStage(path, STAGE_CLASSES[name], unet, scheduler)


def weight_files(folder: Path, variant: str | None) -> list[Path]:
    """The safetensors file(s) of ``folder``: the requested variant, else full precision,
    else ``fp16``; shards through their index."""
    variants = [variant] if variant else [None, "fp16"]
    for v in variants:
        suffix = f".{v}" if v else ""
        single = folder / f"{WEIGHTS}{suffix}.safetensors"
        if single.is_file():
            return [single]
        index = folder / f"{WEIGHTS}.safetensors.index{suffix}.json"
        if index.is_file():
            shards = sorted(set(_json(index)["weight_map"].values()))
            return [folder / s for s in shards]
    if any(folder.glob("*.bin")):
        raise CheckpointError(
            "only pickled .bin weights here, which t2i does not unpickle",
            path=folder,
            fix="convert them to safetensors (diffusers save_pretrained(safe_serialization=True))",
        )
    raise CheckpointError(
        f"no {WEIGHTS}{'.' + variant if variant else ''}.safetensors",
        path=folder,
        fix="pass a complete diffusers folder (variant='fp16' for fp16 files)",
    )


def load_unet(stage: IFStage, *, variant: str | None = None, dtype=None) -> IFUNet:
    """The stage's UNet with its weights (strict: every key of diffusers' layout)."""
    from safetensors.torch import load_file

    from t2i_imagen.if_unet import IFUNet  # the network, only when weights are loaded

    state: dict[str, torch.Tensor] = {}
    for file in weight_files(stage.folder / "unet", variant):
        state.update(load_file(str(file)))
    unet = IFUNet(stage.unet)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"UNet weights do not fit its config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}",
            path=stage.folder / "unet",
            fix="check that config.json and the weights belong together",
        )
    target = dtype or next(iter(state.values())).dtype
    return unet.to(dtype=target if target.is_floating_point else torch.float32).eval()


def text_encoder_width(folder: Path) -> int | None:
    """``d_model`` of the folder's T5 encoder, or None when it has none."""
    config = folder / "text_encoder" / "config.json"
    return int(_json(config)["d_model"]) if config.is_file() else None
