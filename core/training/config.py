"""The options of one run of the training loop, checked when they are made.

Nearly every field is a command-line option of ``t2i train FAMILY`` (``batch_size`` is
``--batch-size``), so a bad value raises :class:`TrainOptionsError` naming that option and
what to pass instead, before any data or model work.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import attrs

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
"""fp32 (TF32 matmuls on CUDA), bf16 autocast, fp16 autocast with loss scaling (CUDA)."""


class TrainOptionsError(ValueError):
    """Options that cannot work; the message names the option and the fix."""


_SET_BY_TRAINERS = frozenset({"name", "weight_decay", "clip_grad"})
"""Fields a trainer sets for its stages; the others are ``t2i train`` options."""


def option_name(field: str) -> str:
    """How errors name a field: ``batch_size`` -> ``--batch-size``; ``TrainConfig.clip_grad``
    for the fields trainers set."""
    if field in _SET_BY_TRAINERS:
        return f"TrainConfig.{field}"
    return "--" + field.replace("_", "-")


def _rule(test: Callable[[Any], bool], need: str, fix: str) -> Callable[..., None]:
    """An attrs validator: ``test(value)`` or a :class:`TrainOptionsError` (None passes)."""

    def validate(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not test(value):
            name = option_name(attribute.name)
            raise TrainOptionsError(f"{name} must be {need}, got {value!r}: {fix}")

    return validate


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@attrs.frozen
class TrainConfig:
    """One run of :func:`t2i.training.train` (a family with two stages makes two).

    Attributes:
        name: the run's name: its state file ``OUT/NAME.state.pt``, progress bar, log lines.
        steps: optimizer steps in all; a resumed run continues to this count.
        batch_size: rows per optimizer step over all processes (the global batch).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        warmup: steps over which the learning rate rises linearly to ``lr`` (0: none).
        cooldown: fraction of the run (of ``steps``, or of ``minutes``, whichever ends
            first) over which the learning rate falls linearly to 0.
        ema_decay: decay of the EMA of the trained weights (0: no EMA); see
            :class:`t2i.training.ema.EMA`.
        grad_accum: micro-batches per optimizer step (gradient accumulation).
        clip_grad: clip the gradients' global norm to this (None: no clipping).
        precision: one of :data:`PRECISIONS`.
        compile: ``torch.compile`` the loss (CUDA; the first steps are slower).
        save_every: steps between saves of the state (it is saved at the end too).
        log_every: steps between loss log lines (each reads the loss: a host sync).
        seed: seeds the training noise (per rank) of a fresh run.
        minutes: stop after this long since ``started`` (None: no time limit).
        device: ``cpu``, ``cuda`` or None (CUDA when available), when the loop makes the
            distributed context itself.
        started: the clock's origin for ``minutes`` (default: when the config was made).
    """

    name: str = attrs.field(
        default="train",
        validator=_rule(lambda v: bool(_NAME.fullmatch(v)), "a file name", "e.g. 'unet'"),
    )
    steps: int = attrs.field(default=1000, validator=_rule(lambda v: v >= 0, ">= 0", "e.g. 1000"))
    batch_size: int = attrs.field(
        default=64, validator=_rule(lambda v: v >= 1, ">= 1", "e.g. --batch-size 64")
    )
    lr: float = attrs.field(
        default=1e-3, validator=_rule(lambda v: v > 0, "> 0", "pass a learning rate such as 3e-4")
    )
    weight_decay: float = attrs.field(
        default=0.0, validator=_rule(lambda v: v >= 0, ">= 0", "e.g. 0.01")
    )
    warmup: int = attrs.field(
        default=0, validator=_rule(lambda v: v >= 0, ">= 0", "pass 0 for no warm-up")
    )
    cooldown: float = attrs.field(
        default=0.0,
        validator=_rule(lambda v: 0 <= v <= 1, "in [0, 1]", "a fraction of the run, e.g. 0.2"),
    )
    ema_decay: float = attrs.field(
        default=0.0,
        validator=_rule(lambda v: 0 <= v < 1, "in [0, 1)", "e.g. 0.999, or 0 for no EMA"),
    )
    grad_accum: int = attrs.field(
        default=1, validator=_rule(lambda v: v >= 1, ">= 1", "pass 1 for no accumulation")
    )
    clip_grad: float | None = attrs.field(
        default=None, validator=_rule(lambda v: v > 0, "> 0", "e.g. 1.0, or None for none")
    )
    precision: str = attrs.field(
        default="fp32",
        validator=_rule(lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}", "fp32"),
    )
    compile: bool = False
    save_every: int = attrs.field(
        default=1000, validator=_rule(lambda v: v >= 1, ">= 1", "e.g. --save-every 1000")
    )
    log_every: int = attrs.field(
        default=100, validator=_rule(lambda v: v >= 1, ">= 1", "e.g. --log-every 100")
    )
    seed: int = 0
    minutes: float | None = attrs.field(
        default=None, validator=_rule(lambda v: v >= 0, ">= 0", "leave it out for no limit")
    )
    device: str | None = None
    started: float = attrs.field(factory=time.time)

    def time_record(self, device: Any) -> dict[str, Any]:
        """``{"device", "minutes"}``: where this run trained and its wall minutes since
        ``started``, as a model.json run record keeps them (``t2i compare`` reads them as the
        default's training compute, :mod:`t2i.compare.measure`)."""
        return {"device": str(device), "minutes": round((time.time() - self.started) / 60, 2)}

    def __attrs_post_init__(self) -> None:
        if self.batch_size % self.grad_accum:
            raise TrainOptionsError(
                f"--batch-size {self.batch_size} does not split into --grad-accum "
                f"{self.grad_accum} micro-batches: use a multiple of {self.grad_accum}"
            )


def check_split(
    batch_size: int, world_size: int, grad_accum: int = 1, *, option: str = "--batch-size"
) -> None:
    """Raise unless ``batch_size`` splits over ``world_size`` processes x ``grad_accum``."""
    parts = world_size * grad_accum
    if batch_size % parts:
        where = f"the {world_size} processes torchrun started"
        if grad_accum > 1:
            where += f" x --grad-accum {grad_accum} micro-batches"
        raise TrainOptionsError(
            f"{option} {batch_size} does not split over {where}: use a multiple of {parts} "
            "(of --nproc_per_node x --grad-accum)"
        )
