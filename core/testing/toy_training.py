"""A tiny trainable model on the core's training loop: for tests, and a working example.

:class:`ToyRegression` fits ``y = x . w + b`` (5 parameters) on a fixed random data set of
:func:`toy_data`; :class:`ToyTrainer` is ``t2i train toy``, registered by the hookimpl
below (which :mod:`t2i.testing.toy_plugin` re-exports)::

    t2i train toy --out runs/toy --steps 200 --lr 0.05
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from t2i.checkpoints import save_safetensors
from t2i.registry import hookimpl
from t2i.training import (
    RandomBatches,
    TrainConfig,
    Trainer,
    TrainerOption,
    TrainOptionsError,
    train,
)

WIDTH = 4
FILE = "toy.safetensors"
"""The exported weights in a model folder."""


class ToyRegression(nn.Module):
    """A linear regression as a :class:`~t2i.training.TrainableModel`: MSE on ``(x, y)``.

    Args:
        width: inputs per row.
        noise: std of fresh noise added to the targets in every :meth:`loss` call, drawn
            from torch's global generator (which the loop seeds and saves).
        delay: seconds each :meth:`loss` sleeps, so that a test can interrupt a run.
    """

    def __init__(self, width: int = WIDTH, *, noise: float = 0.0, delay: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 1)
        self.noise, self.delay = noise, delay

    def trainable_parameters(self):
        return self.parameters()

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        x, y = (t.to(self.linear.weight.device) for t in batch)
        if self.noise:
            y = y + self.noise * torch.randn_like(y)
        return F.mse_loss(self.linear(x).squeeze(-1), y)

    def save(self, folder: Path) -> None:
        save_safetensors(self.state_dict(), Path(folder) / FILE)


def toy_data(rows: int = 256, *, seed: int = 0, width: int = WIDTH) -> RandomBatches:
    """``rows`` fixed random ``(x, y)`` pairs, ``y = x . w + 0.5 + noise``, as batches."""
    gen = torch.Generator("cpu").manual_seed(seed)
    x = torch.randn(rows, width, generator=gen)
    w = torch.randn(width, generator=gen)
    y = x @ w + 0.5 + 0.1 * torch.randn(rows, generator=gen)
    return RandomBatches(rows, lambda idx: (x[idx], y[idx]), seed=seed)


def build_toy(
    rows: int = 256, *, seed: int = 0, noise: float = 0.0, delay: float = 0.0
) -> tuple[ToyRegression, RandomBatches]:
    """The model (initial weights from ``seed``) and its data source."""
    torch.manual_seed(seed)
    return ToyRegression(noise=noise, delay=delay), toy_data(rows, seed=seed)


class ToyTrainer(Trainer):
    """Fit the toy regression (an example trainer on the core loop; tests)."""

    options = (
        TrainerOption("--rows", int, 256, help="Rows of the random data set."),
        TrainerOption("--noise", float, 0.0, help="Std of fresh target noise in every loss."),
        TrainerOption(
            "--delay", float, 0.0, help="Seconds each loss call sleeps (tests interrupt runs)."
        ),
    )
    defaults: ClassVar[dict[str, Any]] = {
        "steps": 100,
        "batch_size": 8,
        "lr": 0.05,
        "save_every": 20,
        "log_every": 10,
    }

    def run(self, config: TrainConfig, out: Path, *, rows: int, noise: float, delay: float) -> Path:
        if rows < 1:
            raise TrainOptionsError(f"--rows must be >= 1, got {rows}")
        model, data = build_toy(rows, seed=config.seed, noise=noise, delay=delay)
        return train(model, data, config, out).save(Path(out) / "model")


@hookimpl
def t2i_register_trainers(register) -> None:
    register("toy", ToyTrainer)
