"""Node graph: typed ports, nodes, DAG validation, JSON, rendering and a caching executor."""

from t2i.graph.errors import Cancelled, GraphError, GraphValidationError, NodeExecutionError
from t2i.graph.executor import Executor, fingerprint
from t2i.graph.graph import Graph, Node, OutputRef
from t2i.graph.node import REQUIRED, ExecutionContext, NodeType, Param, Port

__all__ = [
    "REQUIRED",
    "Cancelled",
    "ExecutionContext",
    "Executor",
    "Graph",
    "GraphError",
    "GraphValidationError",
    "Node",
    "NodeExecutionError",
    "NodeType",
    "OutputRef",
    "Param",
    "Port",
    "fingerprint",
]
