"""Exponential moving average of the trained weights, the weights a trainer exports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn


def ema_decay_at(step: int, decay: float) -> float:
    """The decay used after optimizer step ``step`` (0-based).

    0 before step 100 (the average copies the weights: early weights are noise), 0.99 from
    step 100 to step 1000, then ``decay``.
    """
    if step < 100:
        return 0.0
    if step <= 1000:
        return 0.99
    return decay


class EMA:
    """``shadow <- d * shadow + (1 - d) * param`` after every step, ``d = ema_decay_at(step)``.

    One fused ``torch._foreach_lerp_`` over all tracked parameters.
    """

    def __init__(self, params: Iterable[nn.Parameter], decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.params = list(params)
        self.decay = float(decay)
        with torch.no_grad():
            self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the parameters after optimizer step ``step``."""
        weight = 1.0 - ema_decay_at(step, self.decay)
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], weight)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the parameters for the ``with`` block, then the trained ones."""
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.data for p in self.params], self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], trained)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": [s.clone() for s in self.shadow]}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow):
            raise ValueError(
                f"the saved EMA tracks {len(shadow)} tensors, this model {len(self.shadow)}"
            )
        for mine, saved in zip(self.shadow, shadow):
            mine.copy_(saved)
