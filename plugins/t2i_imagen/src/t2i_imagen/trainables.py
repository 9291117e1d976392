"""One cascade stage of ``t2i train imagen`` as a :class:`t2i.training.TrainableModel`.

The base stage learns ``x0`` at the base size; the super-resolution stage learns ``x0`` at
the SR size given the image downsampled by the SR factor (area), upsampled back and
noise-augmented at a random level ``U{0..999}`` that the network is told (Imagen's noise
conditioning augmentation, section 2.5). Both use the v objective (Salimans & Ho 2022) on
1000 ``squaredcos_cap_v2`` timesteps through :meth:`ImagenDenoiser.loss`, and drop the
caption to the empty prompt's states with probability ``drop`` (classifier-free guidance,
Ho & Salimans 2022; Imagen drops 10 %).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from t2i.payloads import Conditioning, ImageCondition
from t2i_imagen.data import TextStates
from t2i_imagen.denoiser import EfficientUNetPredictor, ImagenDenoiser
from t2i_imagen.efficient_unet import EfficientUNet
from t2i_imagen.noise_aug import AUG_TIMESTEPS

STAGES = ("base", "sr")


def stage_file(folder: str | Path, stage: str) -> Path:
    return Path(folder) / f"{stage}.safetensors"


def save_stage(
    unet: EfficientUNet, path: Path, *, stage: str, prediction_type: str, size: int, extra: dict
) -> Path:
    """fp16 weights with the config and facts in the safetensors metadata (one file a stage)."""
    from t2i.checkpoints import save_safetensors

    state = {k: v.half() if v.is_floating_point() else v for k, v in unet.state_dict().items()}
    meta = {
        "format": "t2i-imagen-stage",
        "stage": stage,
        "prediction_type": prediction_type,
        "size": str(size),
        "config": json.dumps(unet.config.to_dict()),
        "training": json.dumps(extra),
    }
    return save_safetensors(state, path, metadata=meta)


class StageTraining(nn.Module):
    """``loss((images, index))``: images uint8 ``(B, 3, S, S)`` at the stage's training size
    (the SR size for ``sr``), ``index`` their rows of ``text``."""

    def __init__(
        self,
        unet: EfficientUNet,
        text: TextStates,
        *,
        stage: str,
        factor: int = 2,
        prediction_type: str = "v_prediction",
        drop: float = 0.1,
    ) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.unet, self.text, self.stage, self.factor, self.drop = unet, text, stage, factor, drop
        self.prediction_type = prediction_type
        self.denoiser = ImagenDenoiser(
            EfficientUNetPredictor(unet), unet, prediction_type, super_resolution=stage == "sr"
        )
        self.register_buffer("sigmas", self.denoiser.sigmas.float(), persistent=False)
        self.record: dict[str, Any] = {}

    def trainable_parameters(self):
        return self.unet.parameters()

    def _cond(self, index: torch.Tensor) -> Conditioning:
        t = self.text
        dropped = torch.rand(index.shape[0], device=index.device) < self.drop
        d = dropped[:, None]
        states = torch.where(d[..., None], t.empty_states, t.states[index])
        mask = torch.where(d, t.empty_mask, t.mask[index])
        pooled = torch.where(d, t.empty_pooled, t.pooled[index])
        return Conditioning(embeds=states, pooled=pooled, mask=mask)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, index = batch
        x0 = images.float() / 127.5 - 1.0
        cond = self._cond(index)
        if self.stage == "sr":
            low = F.avg_pool2d(x0, self.factor)
            level = torch.randint(0, AUG_TIMESTEPS, (x0.shape[0],), device=x0.device)
            cond = cond.with_image(ImageCondition(low, level.float()))
        t = torch.randint(0, self.sigmas.numel(), (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        return self.denoiser.loss(x0, cond, noise=noise, sigma=self.sigmas[t]).mean()

    def save(self, folder: Path) -> None:
        size = int(self.record.get("size", 0))
        save_stage(
            self.unet,
            stage_file(folder, self.stage),
            stage=self.stage,
            prediction_type=self.prediction_type,
            size=size,
            extra=self.record,
        )
