"""A data source over an indexed data set: uniform random rows, resumable, rank-sharded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from t2i.training.contract import Split


class RandomBatches:
    """Global batches of rows drawn uniformly with replacement from ``n`` items.

    Every rank draws the same global batch from one generator seeded with ``seed``
    and keeps its rows (rank-major, then micro-batch), so N processes see exactly the rows of
    a 1-process run, and the generator's state makes a resume draw what an uninterrupted
    run would.

    Args:
        n: items in the data set.
        fetch: ``fetch(indices)`` -> one batch for :meth:`TrainableModel.loss`; ``indices``
            is a ``(rows,)`` int64 tensor on ``device``.
        seed: seeds the generator.
        device: where the generator draws (a CUDA one: no host sync per step; the same
            numbers on every GPU, other numbers than on the CPU).
    """

    def __init__(
        self,
        n: int,
        fetch: Callable[[torch.Tensor], Any],
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if n < 1:
            raise ValueError(f"a data set of {n} items cannot give batches")
        self.n, self.fetch, self.device = int(n), fetch, torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(int(seed))

    def next(self, split: Split) -> list[Any]:
        """This rank's ``split.micro_batches`` batches of the next global batch."""
        rows = torch.randint(
            0, self.n, (split.batch_size,), generator=self.generator, device=self.device
        )
        mine = rows.view(split.world_size, split.micro_batches, split.rows)[split.rank]
        return [self.fetch(part) for part in mine]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
