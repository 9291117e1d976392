"""Errors of graph construction, validation and execution."""

from __future__ import annotations


class GraphError(Exception):
    """Base class of graph errors."""


class GraphValidationError(GraphError):
    """The graph is malformed; ``node`` and ``port`` name the culprit."""

    def __init__(self, message: str, *, node: str | None = None, port: str | None = None):
        self.node, self.port = node, port
        where = ""
        if node is not None:
            where = f"node {node!r}" + (f", port {port!r}" if port else "") + ": "
        super().__init__(where + message)


class NodeExecutionError(GraphError):
    """A node raised while executing; the original exception is the ``__cause__``."""

    def __init__(self, node: str, node_type: str, error: BaseException):
        self.node, self.node_type, self.error = node, node_type, error
        super().__init__(f"node {node!r} ({node_type}) failed: {type(error).__name__}: {error}")


class Cancelled(GraphError):
    """Execution was cancelled; finished nodes stay cached, nothing is half-written."""
