"""Generation requests: attrs classes validated before any model work."""

from __future__ import annotations

import random
from typing import Any

import attrs


class RequestError(ValueError):
    """A request field has a bad value; the message names the field and what is allowed."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise RequestError(field, message)


def _int_range(lo: int, hi: int | None = None):
    def validator(_inst, attribute, value):
        _check(
            isinstance(value, int) and not isinstance(value, bool),
            attribute.name,
            f"must be an integer, got {value!r}",
        )
        _check(
            value >= lo and (hi is None or value <= hi),
            attribute.name,
            f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {value}",
        )

    return validator


def _float_range(lo: float, hi: float | None = None, *, optional: bool = False):
    def validator(_inst, attribute, value):
        if optional and value is None:
            return
        _check(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            attribute.name,
            f"must be a number, got {value!r}",
        )
        _check(
            value >= lo and (hi is None or value <= hi),
            attribute.name,
            f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {value}",
        )

    return validator


def _str(_inst, attribute, value):
    _check(isinstance(value, str), attribute.name, f"must be a string, got {type(value).__name__}")


@attrs.frozen
class GenerationRequest:
    """One call of a pipeline. Fields a recipe does not bind are rejected by the pipeline.

    ``seed=-1`` draws a random seed; image ``i`` of a batch uses ``seed + i`` and
    batch ``b`` of ``batch_count`` starts at ``seed + b * batch_size`` (the web UIs' rule).
    """

    prompt: str = attrs.field(default="", validator=_str)
    negative_prompt: str = attrs.field(default="", validator=_str)
    steps: int = attrs.field(default=20, validator=_int_range(1, 1000))
    cfg_scale: float = attrs.field(default=7.0, validator=_float_range(0.0, 100.0))
    sampler: str = attrs.field(default="euler", validator=_str)
    schedule: str | None = attrs.field(default=None)
    guidance: str = attrs.field(default="cfg", validator=_str)
    seed: int = attrs.field(default=-1, validator=_int_range(-1, 2**32 - 1))
    width: int = attrs.field(default=512, validator=_int_range(8, 8192))
    height: int = attrs.field(default=512, validator=_int_range(8, 8192))
    batch_size: int = attrs.field(default=1, validator=_int_range(1, 256))
    batch_count: int = attrs.field(default=1, validator=_int_range(1, 10_000))
    strength: float = attrs.field(default=0.75, validator=_float_range(0.0, 1.0))
    init_image: Any = None
    eta: float | None = attrs.field(default=None, validator=_float_range(0.0, optional=True))
    noise_device: str = attrs.field(
        default="cpu", validator=attrs.validators.in_(("cpu", "device"))
    )
    extra: dict[str, Any] = attrs.Factory(dict)

    def resolved_seed(self) -> int:
        """The seed actually used: ``seed``, or a fresh random one for -1 (as A1111)."""
        return self.seed if self.seed != -1 else random.randrange(4294967294)


REQUEST_FIELDS: tuple[str, ...] = tuple(
    f.name for f in attrs.fields(GenerationRequest) if f.name != "extra"
)
