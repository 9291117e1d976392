"""What the core's training loop needs of a model and of its data.

A family (or DreamBooth) hands :func:`t2i.training.train` a :class:`TrainableModel` and a
:class:`DataSource`; the loop owns everything else: the optimizer, EMA, learning-rate
schedule, precision, data parallelism and the resumable state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs
import torch
from torch import nn


@runtime_checkable
class TrainableModel(Protocol):
    """A model the core loop can train, resume and export. It is an ``nn.Module`` with:

    - ``trainable_parameters()``: the parameters the optimizer updates and the EMA tracks.
      Every other parameter of the module must have ``requires_grad=False`` (data-parallel
      training averages the gradients of exactly these).
    - ``loss(batch) -> Tensor``: a scalar, the *mean* over the batch's rows, so that
      accumulated and data-parallel gradients equal those of one full batch. It may draw
      randomness (noise, timesteps, caption dropout) from torch's global generator, which
      the loop seeds per rank and saves with the state.
    - ``state_dict()`` / ``load_state_dict(state)``: everything a resume needs besides the
      optimizer (the module's parameters and persistent buffers).
    - ``save(folder)``: the export in the component's own format, the files its family's
      loader reads. :meth:`TrainResult.save <t2i.training.loop.TrainResult.save>` calls it
      with the EMA weights in place.
    - optionally ``logged_metrics() -> dict[str, float]``: extra numbers of the last step
      (a dVAE's codebook use ...), logged with the loss and kept in ``TrainResult.metrics``.
    """

    def trainable_parameters(self) -> Iterable[nn.Parameter]: ...

    def loss(self, batch: Any) -> torch.Tensor: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any: ...

    def save(self, folder: Path) -> None: ...


@attrs.frozen
class Split:
    """This process's share of one optimizer step.

    ``batch_size`` rows in all per step (the global batch), split evenly over ``world_size``
    ranks and, on each rank, over ``micro_batches`` accumulation steps: ``rows`` each.
    """

    batch_size: int
    rank: int = 0
    world_size: int = 1
    micro_batches: int = 1

    @property
    def rows(self) -> int:
        return self.batch_size // (self.world_size * self.micro_batches)


@runtime_checkable
class DataSource(Protocol):
    """Where the loop's batches come from.

    - ``next(split)``: this rank's share of the next global batch, as a list of
      ``split.micro_batches`` batches of ``split.rows`` rows each, the argument of
      :meth:`TrainableModel.loss`. Every rank advances alike (the same global batch, each
      taking its own rows), so a run on N processes sees the batches of a 1-process run.
    - ``state_dict()`` / ``load_state_dict(state)``: the position and RNG, saved with the
      training state so that a resumed run draws the batches an uninterrupted one would.
    """

    def next(self, split: Split) -> list[Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...
