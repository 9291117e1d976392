"""``t2i train FAMILY``: one click command per registered :class:`~t2i.training.Trainer`.

Each command has ``--out``, the family's own options, then the loop options every trainer
shares (:data:`LOOP_OPTIONS`, one :class:`~t2i.training.TrainConfig`). Options that cannot
work exit with status 2 and a one-line ``error:`` message, before any data or model work.
Under ``torchrun`` only rank 0 prints the exported folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import structlog

from t2i.training.config import PRECISIONS, TrainConfig, TrainOptionsError, check_split
from t2i.training.trainer import Trainer, TrainerOption

log = structlog.get_logger("t2i.training")

OUT = TrainerOption(
    "--out",
    click.Path(file_okay=False),
    help="Run folder: the resumable state (NAME.state.pt) and model/ (the exported model).",
)
LOOP_OPTIONS: tuple[TrainerOption, ...] = (
    TrainerOption("--steps", int, 1000, help="Optimizer steps in all (a resume continues)."),
    TrainerOption(
        "--minutes",
        float,
        help="Stop after this many minutes since the command started (the state is saved).",
    ),
    TrainerOption(
        "--batch-size",
        int,
        64,
        help="Rows per optimizer step, over all torchrun processes and --grad-accum parts.",
    ),
    TrainerOption("--grad-accum", int, 1, help="Micro-batches per optimizer step."),
    TrainerOption("--lr", float, 1e-3, help="Peak learning rate (AdamW)."),
    TrainerOption("--warmup", int, 0, help="Steps over which the lr rises linearly to --lr."),
    TrainerOption(
        "--cooldown",
        float,
        0.0,
        help="Fraction of the run (steps or --minutes) over which the lr falls linearly to 0.",
    ),
    TrainerOption(
        "--ema-decay", float, 0.0, help="EMA of the exported weights (0: none, the trained ones)."
    ),
    TrainerOption("--save-every", int, 1000, help="Steps between saves of the resumable state."),
    TrainerOption("--log-every", int, 100, help="Steps between loss log lines (--log-level info)."),
    TrainerOption(
        "--precision",
        click.Choice(PRECISIONS),
        "fp32",
        help="fp32 (TF32 matmuls on CUDA), bf16 autocast, fp16 autocast + loss scaling (CUDA).",
    ),
    TrainerOption("--bf16", is_flag=True, help="bf16 autocast: the same as --precision bf16."),
    TrainerOption(
        "--device", str, help="cpu or cuda (default: CUDA when available; torchrun: per rank)."
    ),
    TrainerOption("--seed", int, 0, help="Seeds the initial weights, the data and the noise."),
    TrainerOption(
        "--compile", is_flag=True, help="torch.compile the loss (CUDA; first steps slower)."
    ),
)
"""The options every ``t2i train FAMILY`` has, with the core's defaults."""


class TrainUsageError(click.UsageError):
    """A usage error shown as one ``error: ...`` line (exit status 2)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _check_trainer(name: str, trainer: Trainer) -> None:
    loop = {o.keyword for o in (OUT, *LOOP_OPTIONS)}
    unknown = sorted((set(trainer.defaults) | set(trainer.loop_help)) - loop)
    clash = sorted(loop & {o.keyword for o in trainer.options})
    if unknown or clash:
        raise TypeError(
            f"trainer {name!r}: defaults/loop_help name no loop option {unknown}, or its "
            f"options {clash} shadow loop options"
        )


def _config(name: str, values: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of the loop options' values (``--bf16`` folded in)."""
    if values.pop("bf16"):
        if values["precision"] == "fp16":
            raise TrainOptionsError("--bf16 contradicts --precision fp16: pass one of them")
        values["precision"] = "bf16"
    return TrainConfig(name=name, **values)


def _invoke(name: str, trainer: Trainer, values: dict[str, Any]) -> None:
    out = Path(values.pop("out"))
    loop = {o.keyword: values.pop(o.keyword) for o in LOOP_OPTIONS}
    try:
        config = _config(name, loop)
        check_split(config.batch_size, int(os.environ.get("WORLD_SIZE", "1")), config.grad_accum)
        folder = trainer.run(config, out, **values)
    except TrainOptionsError as error:
        raise TrainUsageError(str(error)) from error
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(str(folder))


def trainer_command(name: str, trainer: Trainer) -> click.Command:
    """The ``t2i train NAME`` command of ``trainer``."""
    _check_trainer(name, trainer)
    out = OUT.click_option(help=trainer.loop_help.get("out"))
    out.required = True
    params = [out, *(o.click_option() for o in trainer.options)]
    for option in LOOP_OPTIONS:
        key = option.keyword
        params.append(
            option.click_option(default=trainer.defaults.get(key), help=trainer.loop_help.get(key))
        )
    return click.Command(
        name,
        callback=lambda **values: _invoke(name, trainer, values),
        params=params,
        help=trainer.help,
        short_help=trainer.description,
    )


def train_group(manager: Callable[[], Any]) -> click.Group:
    """The ``train`` group; its subcommands are the trainers ``manager()`` registered."""

    class TrainGroup(click.Group):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return manager().registry.names("trainer")

        def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
            reg = manager().registry
            if not reg.has("trainer", name):
                return None
            entry = reg.get("trainer", name)
            trainer = entry.create()
            if not isinstance(trainer, Trainer):
                error = f"{trainer!r} is not a t2i.training.Trainer"
                log.warning("trainer_invalid", trainer=entry.name, plugin=entry.plugin, error=error)
                return None
            return trainer_command(entry.name, trainer)

    return TrainGroup("train", help="Train a model (trainers are registered by plugins).")
