"""Models that take their own optimizer steps: several optimizers in one loop step (GANs).

The core loop (:func:`t2i.training.train`) runs one AdamW over ``trainable_parameters()``
unless the model is a :class:`SteppedModel`; then the model makes its optimizers
(``make_optimizers(lr)``, e.g. a discriminator's and a generator's) and does one training
step per loop step (``train_step(batch, tools)``), through :class:`StepTools`: the
precision's autocast, one loss scaler and :meth:`StepTools.optimize` (zero grad, scaled
backward, optional clipping, step). The loop keeps everything else: learning-rate warm-up
and cool-down (each group's lr is its initial lr times the schedule's factor), the EMA
(of ``ema_parameters()`` when the model has it, e.g. the generator alone), logging, and the
resumable state (every optimizer's state, by name). A stepped model trains on one process
without gradient accumulation (it owns its steps, so no gradient is averaged for it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
import torch
from torch import nn

from t2i.training.precision import autocast

PEAK_LR = "peak_lr"
"""The param-group key where the loop keeps each group's initial (peak) learning rate."""


@runtime_checkable
class SteppedModel(Protocol):
    """A :class:`~t2i.training.TrainableModel` that steps its own optimizers.

    - ``make_optimizers(lr) -> {name: optimizer}`` over its trainable parameters (``lr``:
      ``--lr``; a model may derive per-optimizer rates from it);
    - ``train_step(batch, tools) -> {name: scalar tensor}``: one step on ``batch`` (the
      data source's only micro-batch); the ``"loss"`` entry is what the loop logs as the
      loss, the others are logged beside it (read on log steps only).
    """

    def make_optimizers(self, lr: float) -> Mapping[str, torch.optim.Optimizer]: ...

    def train_step(self, batch: Any, tools: StepTools) -> Mapping[str, torch.Tensor]: ...


def is_stepped(model: Any) -> bool:
    """Whether the loop hands ``model`` its own steps (a :class:`SteppedModel`)."""
    return callable(getattr(model, "train_step", None)) and callable(
        getattr(model, "make_optimizers", None)
    )


def ema_parameters(model: Any, default: list[nn.Parameter]) -> list[nn.Parameter]:
    """``model.ema_parameters()`` when it has it (e.g. the generator only), else ``default``."""
    pick = getattr(model, "ema_parameters", None)
    return list(pick()) if callable(pick) else default


def set_lr_factor(optimizers: Iterable[torch.optim.Optimizer], factor: float) -> None:
    """Every group's lr becomes its initial lr (kept under :data:`PEAK_LR`) times ``factor``."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group.setdefault(PEAK_LR, group["lr"])
            group["lr"] = group[PEAK_LR] * factor


@attrs.frozen(eq=False)
class StepTools:
    """What a :class:`SteppedModel`'s ``train_step`` uses: its optimizers, the loss scaler,
    the run's precision and device, gradient clipping and the step number."""

    optimizers: Mapping[str, torch.optim.Optimizer]
    scaler: torch.amp.GradScaler
    precision: str
    device: torch.device
    clip_grad: float | None = None
    step: int = 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision's autocast context (a no-op for fp32)."""
        return autocast(self.precision, self.device)

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """Zero ``name``'s gradients, back-propagate the (scaled) ``loss``, clip, step."""
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.float()).backward()
        if self.clip_grad is not None:
            self.scaler.unscale_(optimizer)
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        self.scaler.step(optimizer)
        self.scaler.update()


def check_stepped(config: Any, world_size: int) -> None:
    """Refuse options a stepped model cannot train with (TrainOptionsError)."""
    from t2i.training.config import TrainOptionsError

    if world_size > 1:
        raise TrainOptionsError(
            f"this model steps its own optimizers and trains on one process, not the "
            f"{world_size} torchrun started: run it without torchrun"
        )
    if config.grad_accum != 1:
        raise TrainOptionsError(
            f"--grad-accum {config.grad_accum}: this model steps its own optimizers, once per "
            "batch: pass --grad-accum 1 (or a larger --batch-size)"
        )
    if config.compile:
        raise TrainOptionsError("--compile: this model steps its own optimizers: leave it out")
