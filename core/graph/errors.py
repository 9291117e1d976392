"""Errors of graph construction, validation and execution."""

from __future__ import annotations


class GraphError(Exception):
    """Base class of graph errors."""


class GraphValidationError(GraphError):
    """The graph is malformed; ``node`` and ``port`` name the culprit, ``source`` the file.

    The message reads ``source: node 'id', port 'name': problem``, each part when known.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        port: str | None = None,
        source: str | None = None,
    ):
        self.node, self.port, self.source, self.problem = node, port, source, message
        where = ""
        if node is not None:
            where = f"node {node!r}" + (f", port {port!r}" if port else "") + ": "
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + where + message)

    def located(self, source: str) -> GraphValidationError:
        """The same error, naming the file (or other source) it came from (kept if set)."""
        return type(self)(
            self.problem, node=self.node, port=self.port, source=self.source or str(source)
        )


class NodeExecutionError(GraphError):
    """A node raised while executing; the original exception is the ``__cause__``."""

    def __init__(self, node: str, node_type: str, error: BaseException):
        self.node, self.node_type, self.error = node, node_type, error
        super().__init__(f"node {node!r} ({node_type}) failed: {type(error).__name__}: {error}")


class Cancelled(GraphError):
    """Execution was cancelled; finished nodes stay cached, nothing is half-written."""
