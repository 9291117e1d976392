"""Node types: a schema (typed ports, parameters, description) and a stateless ``execute``.

A node type is a class with class-level ``inputs``, ``outputs``, ``params`` and a
``execute(ctx, **values) -> dict`` method that receives every input and parameter by
name and returns every output by name. It holds no state between calls, so the
executor may cache its outputs keyed by its inputs (ComfyUI's node model, typed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from t2i.payloads import SOCKET_TYPES

_MISSING = object()


@attrs.frozen
class Port:
    """A typed input or output. ``type`` is a socket name such as ``"CONDITIONING"``."""

    name: str
    type: str = attrs.field()
    optional: bool = False
    description: str = ""

    @type.validator
    def _check(self, _attr, value):
        if value not in SOCKET_TYPES:
            raise ValueError(
                f"port {self.name!r}: unknown socket type {value!r}; "
                f"known: {', '.join(SOCKET_TYPES)}"
            )


@attrs.frozen
class Param:
    """A constant setting of a node (a UI widget value); ``default=REQUIRED``: no default.

    ``minimum`` / ``maximum`` bound a number (inclusive; None: unbounded), checked when
    the graph is validated, so a value out of range is refused before any model work.
    """

    name: str
    type: type | tuple[type, ...] = object
    default: Any = _MISSING
    description: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING


REQUIRED = _MISSING


class NodeType:
    """Base class of node types. Subclasses set the class attributes and implement ``execute``."""

    type_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    inputs: ClassVar[tuple[Port, ...]] = ()
    outputs: ClassVar[tuple[Port, ...]] = ()
    params: ClassVar[tuple[Param, ...]] = ()
    cacheable: ClassVar[bool] = True

    def execute(self, ctx: ExecutionContext, **values: Any) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def input(cls, name: str) -> Port | None:
        return next((p for p in cls.inputs if p.name == name), None)

    @classmethod
    def output(cls, name: str) -> Port | None:
        return next((p for p in cls.outputs if p.name == name), None)

    @classmethod
    def param(cls, name: str) -> Param | None:
        return next((p for p in cls.params if p.name == name), None)

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """A JSON-able description of the node type (for UIs and ``t2i components``)."""
        return {
            "type": cls.type_name,
            "description": cls.description,
            "inputs": [
                {"name": p.name, "type": p.type, "optional": p.optional} for p in cls.inputs
            ],
            "outputs": [{"name": p.name, "type": p.type} for p in cls.outputs],
            "params": [
                {
                    "name": p.name,
                    "default": None if p.required else p.default,
                    "required": p.required,
                    "choices": p.choices,
                }
                for p in cls.params
            ],
        }


@attrs.define
class ExecutionContext:
    """What the executor hands each node: the registry, device, progress and cancellation.

    Attributes:
        registry: the component registry, to instantiate components by name.
        device, dtype: where models run.
        node_id: the id of the node being executed.
        on_step: ``on_step(node_id, step, total)`` for per-step progress.
        check_cancelled: raises :class:`~t2i.graph.errors.Cancelled` when cancellation was asked.
        on_preview: ``on_preview(node_id, step, total, value)`` with a node's intermediate
            result (a sampler's current ``x0`` prediction), for live previews; or None.
    """

    registry: Any
    device: Any = "cpu"
    dtype: Any = None
    node_id: str = ""
    on_step: Callable[[str, int, int], None] | None = None
    check_cancelled: Callable[[], None] = lambda: None
    on_preview: Callable[[str, int, int, Any], None] | None = None

    def preview(self, step: int, total: int, value: Any) -> None:
        """Hand an intermediate result of the current node to ``on_preview`` (if any)."""
        if self.on_preview is not None:
            self.on_preview(self.node_id, step, total, value)

    def step(self, step: int, total: int) -> None:
        """Report progress of the current node and honour cancellation."""
        self.check_cancelled()
        if self.on_step is not None:
            self.on_step(self.node_id, step, total)
