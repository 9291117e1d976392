"""Mixed precision: fp32 (TF32 matmuls on CUDA), bf16 autocast, fp16 autocast + loss scaling."""

from __future__ import annotations

import contextlib

import torch

from t2i.training.config import TrainOptionsError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`TrainOptionsError` for a precision ``device`` cannot train in."""
    if precision == "fp16" and device.type != "cuda":
        raise TrainOptionsError(
            f"--precision fp16 needs a CUDA device (loss scaling), not {device.type}: "
            "use --precision bf16 or fp32"
        )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of the forward pass (a no-op for fp32)."""
    if precision not in _DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled for fp16 only (a pass-through otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def allow_tf32(device: torch.device) -> None:
    """TF32 matmuls and convolutions on CUDA (fp32 storage, ~fp32 accuracy, tensor cores)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
