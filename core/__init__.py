"""t2i: a plugin-based text-to-image engine.

The core knows no model family. It defines the component kinds as plugin hooks
(:mod:`t2i.registry`), wires components into a node graph (:mod:`t2i.graph`) and
runs it (:class:`t2i.Engine`).
"""

from __future__ import annotations

from t2i.version import __version__

__all__ = ["Engine", "Pipeline", "__version__"]

from t2i.logs import ensure_configured as _ensure_logging

_ensure_logging()


def __getattr__(name: str):  # lazy: importing t2i must not import torch-heavy modules
    if name in ("Engine", "Pipeline"):
        from t2i import engine

        return getattr(engine, name)
    raise AttributeError(name)
