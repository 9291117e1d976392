"""Runs a validated graph in topological order, caching each node's outputs by its inputs.

A node's cache key is its type, its parameters and the cache keys of the outputs
that feed it, so a re-run that changes only the seed re-runs only the nodes
downstream of the seed: the tokenizer and text encoder come from the cache.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from t2i.graph.errors import Cancelled, GraphValidationError, NodeExecutionError
from t2i.graph.graph import Graph
from t2i.graph.node import ExecutionContext, NodeType

log = structlog.get_logger("t2i.graph")


def fingerprint(value: Any) -> str:
    """A stable digest of a parameter value (JSON-like values, tensors, PIL images, paths)."""
    h = hashlib.sha1()
    _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    import torch

    if value is None or isinstance(value, (bool, int, float, str)):
        h.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for v in value:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(value, Mapping):
        h.update(b"{")
        for k in sorted(value, key=str):
            _feed(h, str(k))
            _feed(h, value[k])
        h.update(b"}")
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"tensor:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif hasattr(value, "tobytes") and hasattr(value, "size") and hasattr(value, "mode"):
        h.update(f"pil:{value.mode}:{value.size};".encode())
        h.update(value.tobytes())
    elif hasattr(value, "__fspath__"):
        h.update(f"path:{value.__fspath__()};".encode())
    else:  # unhashable object: identity (cached only while the same object is passed)
        h.update(f"object:{type(value).__qualname__}:{id(value)};".encode())


class Executor:
    """Executes graphs against a node-type lookup, keeping an LRU cache of node outputs.

    Args:
        node_types: ``get_node_type(name) -> NodeType subclass`` provider (a
            :class:`~t2i.registry.PluginManager`-backed lookup) or a plain mapping.
        registry: the component registry handed to nodes.
        cache_size: how many node results to keep (0 disables caching).
    """

    def __init__(
        self,
        node_types: Any,
        registry: Any = None,
        *,
        cache_size: int = 256,
        device: Any = "cpu",
        dtype: Any = None,
    ) -> None:
        self.node_types = node_types
        self.registry = registry
        self.cache_size = cache_size
        self.device, self.dtype = device, dtype
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.stats = {"executed": 0, "cached": 0}

    def _node_type(self, name: str) -> type[NodeType]:
        if isinstance(self.node_types, Mapping):
            cls = self.node_types.get(name)
            if cls is None:
                raise GraphValidationError(f"unknown node type {name!r}")
            return cls
        return self.node_types.get_node_type(name)

    def clear_cache(self) -> None:
        self._cache.clear()

    def run(
        self,
        graph: Graph,
        *,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        outputs: list[str] | None = None,
        on_node: Callable[[str, str, str], None] | None = None,
        on_step: Callable[[str, int, int], None] | None = None,
        cancel: threading.Event | None = None,
        on_preview: Callable[[str, int, int, Any], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Execute ``graph`` and return ``{node_id: {output_name: value}}``.

        Args:
            params: per-node parameter overrides for this run, ``{node_id: {param: value}}``.
            outputs: only run what these node ids need (default: every node).
            on_node: ``on_node(node_id, node_type, event)``, event is "start", "done" or "cached".
            on_step: ``on_step(node_id, step, total)`` from nodes that loop.
            cancel: set it to stop; raises :class:`Cancelled` at the next node or step.
            on_preview: ``on_preview(node_id, step, total, value)`` from nodes that show
                intermediate results (a diffusion sampler's ``x0`` prediction per step).
        """
        graph = graph.copy() if params else graph
        for nid, values in (params or {}).items():
            graph.set_params(nid, **values)
        graph.validate(_Lookup(self))
        order = graph.topological_order()
        if outputs is not None:
            order = _needed(graph, order, outputs)

        def check_cancelled() -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled("execution cancelled")

        keys: dict[str, str] = {}
        results: dict[str, dict[str, Any]] = {}
        for nid in order:
            check_cancelled()
            node = graph.nodes[nid]
            cls = self._node_type(node.type)
            key = keys[nid] = _node_key(graph, nid, keys)
            if cls.cacheable and key in self._cache:
                self._cache.move_to_end(key)
                results[nid] = self._cache[key]
                self.stats["cached"] += 1
                if on_node:
                    on_node(nid, node.type, "cached")
                log.debug("node_cached", node=nid, type=node.type)
                continue
            values = {p.name: p.default for p in cls.params if not p.required}
            values.update(node.params)
            for port in cls.inputs:
                ref = node.inputs.get(port.name)
                values[port.name] = None if ref is None else results[ref.node][ref.output]
            ctx = ExecutionContext(
                self.registry, self.device, self.dtype, nid, on_step, check_cancelled, on_preview
            )
            if on_node:
                on_node(nid, node.type, "start")
            log.debug("node_start", node=nid, type=node.type)
            try:
                out = cls().execute(ctx, **values)
            except (Cancelled, GraphValidationError):
                raise
            except Exception as exc:
                raise NodeExecutionError(nid, node.type, exc) from exc
            missing = [p.name for p in cls.outputs if p.name not in out]
            if missing:
                raise NodeExecutionError(
                    nid, node.type, RuntimeError(f"did not return outputs {missing}")
                )
            results[nid] = out
            self.stats["executed"] += 1
            if cls.cacheable and self.cache_size:
                self._cache[key] = out
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            if on_node:
                on_node(nid, node.type, "done")
        return results


    def prime(self, graph: Graph, node_id: str, outputs: Mapping[str, Any]) -> None:
        """Cache ``outputs`` as node ``node_id``'s result for ``graph`` as it stands (its
        parameters now), so a later run takes them instead of executing the node (a runtime
        puts its own components in place of loaders this way, before they ever run)."""
        keys: dict[str, str] = {}
        for nid in _needed(graph, graph.topological_order(), [node_id]):
            keys[nid] = _node_key(graph, nid, keys)
        self._cache[keys[node_id]] = dict(outputs)
        self._cache.move_to_end(keys[node_id])


def _node_key(graph: Graph, nid: str, keys: Mapping[str, str]) -> str:
    """A node's cache key: its type, parameters and the keys of the outputs feeding it."""
    node = graph.nodes[nid]
    key_src = [node.type, fingerprint(node.params)]
    key_src += [f"{p}={keys[r.node]}.{r.output}" for p, r in sorted(node.inputs.items())]
    return hashlib.sha1("|".join(key_src).encode()).hexdigest()


class _Lookup:
    """Adapts an executor's node-type provider to ``Graph.validate``."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def get_node_type(self, name: str) -> type[NodeType]:
        return self.executor._node_type(name)


def _needed(graph: Graph, order: list[str], wanted: list[str]) -> list[str]:
    need: set[str] = set()
    stack = list(wanted)
    while stack:
        nid = stack.pop()
        if nid in need:
            continue
        need.add(nid)
        stack.extend(ref.node for ref in graph[nid].inputs.values())
    return [n for n in order if n in need]
