"""Loaded pipelines, kept across requests, least recently used unloaded first."""

from __future__ import annotations

import gc
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import structlog

log = structlog.get_logger("t2i.server")


def model_key(recipe: str | None = None, options: Mapping[str, Any] | None = None, graph=None):
    """The cache key of a recipe with options, or of a graph (its JSON's digest)."""
    if graph is not None:
        digest = hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:16]
        return ("graph", digest)
    return ("recipe", recipe, json.dumps(dict(options or {}), sort_keys=True, default=str))


def key_label(key: tuple) -> str:
    """A key as people read it: ``ldm-shapes``, ``ldm-shapes {"clip_skip": 2}``, ``graph:ab12``."""
    if key[0] == "graph":
        return f"graph:{key[1]}"
    return key[1] if key[2] == "{}" else f"{key[1]} {key[2]}"


class ModelCache:
    """At most ``max_models`` pipelines; :meth:`get` builds a missing one and unloads the
    least recently used beyond the limit (its tensors are freed when no job holds it)."""

    def __init__(self, max_models: int) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        self.max_models = max_models
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.unloads = 0

    def get(self, key: tuple, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        pipe = build()  # outside the lock: building may take long; only the worker builds
        with self._lock:
            self._items[key] = pipe
            self._items.move_to_end(key)
            self.loads += 1
            evicted = []
            while len(self._items) > self.max_models:
                evicted.append(self._items.popitem(last=False))
        for old, _ in evicted:
            self.unloads += 1
            log.info("model_unloaded", model=key_label(old))
        if evicted:
            del evicted
            _free_memory()
        log.info("model_loaded", model=key_label(key))
        return pipe

    def loaded(self) -> list[tuple]:
        """Keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
        _free_memory()


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
