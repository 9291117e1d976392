"""The learning-rate schedule: linear warm-up, constant, linear cool-down to zero."""

from __future__ import annotations


def lr_factor(step: int, progress: float, *, warmup: int, cooldown: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Rises linearly over the first ``warmup`` steps (``(step + 1) / warmup``; 0: none), stays
    at 1, and over the last ``cooldown`` fraction of the run falls linearly to 0:
    ``(1 - progress) / cooldown`` once ``progress`` (the fraction of the run done, by steps
    or by the clock) passes ``1 - cooldown``.
    """
    warm = 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
    if cooldown <= 0.0:
        return warm
    return warm * min(1.0, max(0.0, (1.0 - progress) / cooldown))


def run_progress(step: int, steps: int, clock: float = 0.0) -> float:
    """Fraction of the run done: of the ``steps``, or of the time allowed (``clock``)."""
    return max(clock, step / max(steps, 1))
