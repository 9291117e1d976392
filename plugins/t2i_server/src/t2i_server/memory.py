"""``/sdapi/v1/memory``: real numbers from psutil and torch.cuda (A1111's keys)."""

from __future__ import annotations

from typing import Any

from t2i_server.cache import ModelCache, key_label


def memory_report(cache: ModelCache | None = None) -> dict[str, Any]:
    """``{ram: {free, used, total, process}, cuda: {...} or {error}, models: {...}}`` in bytes."""
    import psutil

    vm = psutil.virtual_memory()
    report: dict[str, Any] = {
        "ram": {
            "free": vm.available,
            "used": vm.total - vm.available,
            "total": vm.total,
            "process": psutil.Process().memory_info().rss,
        },
        "cuda": _cuda(),
    }
    if cache is not None:
        report["models"] = {
            "loaded": [key_label(k) for k in cache.loaded()],
            "max_models": cache.max_models,
            "loads": cache.loads,
            "unloads": cache.unloads,
        }
    return report


def _cuda() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"error": "CUDA is not available"}
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()
    return {
        "system": {"free": free, "used": total - free, "total": total},
        "active": {
            "current": stats.get("active_bytes.all.current", 0),
            "peak": stats.get("active_bytes.all.peak", 0),
        },
        "allocated": {
            "current": stats.get("allocated_bytes.all.current", 0),
            "peak": stats.get("allocated_bytes.all.peak", 0),
        },
        "reserved": {
            "current": stats.get("reserved_bytes.all.current", 0),
            "peak": stats.get("reserved_bytes.all.peak", 0),
        },
        "inactive": {
            "current": stats.get("inactive_split_bytes.all.current", 0),
            "peak": stats.get("inactive_split_bytes.all.peak", 0),
        },
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
    }
