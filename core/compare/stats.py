"""Bootstrap intervals over prompts and the significance rule of ``t2i compare``.

Every recipe is scored on the same prompts and seeds, so a figure (alignment overall, single,
pair, one attribute) is a mean of per-prompt values, and a difference between two recipes is
*paired* by prompt. Intervals are percentile bootstrap intervals (Efron & Tibshirani 1993,
ch. 13): prompts are resampled with replacement ``n_boot`` times from a fixed seed. A
difference is significant when the interval of the paired difference excludes 0 and it rests
on at least :data:`MIN_PROMPTS` prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

N_BOOT = 2000
LEVEL = 0.95
SEED = 0
MIN_PROMPTS = 8
"""Fewest prompts a difference is tested on: the percentile bootstrap of a mean over a handful
of prompts is too narrow (with two prompts that agree, its interval has width 0)."""


@attrs.frozen
class Interval:
    """A figure with its bootstrap interval; ``n`` prompts went into it."""

    value: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.n >= 1 and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, float | int]:
        return attrs.asdict(self)


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan, 0)


def _valid(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[~np.isnan(v)]


def bootstrap_interval(
    values: Sequence[float], *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED
) -> Interval:
    """Mean of the per-prompt ``values`` (NaN = not asked of that prompt) and its interval.

    The interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the means of
    ``n_boot`` resamples of the prompts (``numpy.random.default_rng(seed)``).
    """
    v = _valid(values)
    if v.size == 0:
        return NAN_INTERVAL
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    means = v[idx].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(v.mean()), float(low), float(high), int(v.size))


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, n_boot: int = N_BOOT, seed: int = SEED
) -> Interval:
    """Interval of ``mean(a - b)`` over the prompts where both are defined (paired)."""
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_.shape != b_.shape:
        raise ValueError(f"paired values need the same prompts: {a_.shape} vs {b_.shape}")
    both = ~(np.isnan(a_) | np.isnan(b_))
    return bootstrap_interval(a_[both] - b_[both], n_boot=n_boot, seed=seed)


@attrs.frozen
class Difference:
    """``a - b`` on one figure, with its interval and whether it is significant."""

    figure: str
    a: str
    b: str
    interval: Interval

    @property
    def testable(self) -> bool:
        return self.interval.n >= MIN_PROMPTS

    @property
    def significant(self) -> bool:
        return self.testable and self.interval.excludes_zero()

    def to_dict(self) -> dict[str, object]:
        return {
            "figure": self.figure,
            "a": self.a,
            "b": self.b,
            "difference": self.interval.to_dict(),
            "testable": self.testable,
            "significant": self.significant,
        }


def pairwise_differences(
    per_prompt: dict[str, dict[str, Sequence[float]]], figures: Sequence[str], **kw: int
) -> list[Difference]:
    """Every pair of recipes (in the order given) on every figure.

    Args:
        per_prompt: recipe -> figure -> per-prompt values (the same prompts for all recipes).
        figures: the figures to compare.
    """
    names = list(per_prompt)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for fig in figures:
                if fig in per_prompt[a] and fig in per_prompt[b]:
                    d = paired_difference(per_prompt[a][fig], per_prompt[b][fig], **kw)
                    out.append(Difference(fig, a, b, d))
    return out
