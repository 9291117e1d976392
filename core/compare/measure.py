"""What ``t2i compare`` measures around a recipe rather than in its images: peak memory, the
size of its weights and the training compute its model folder records.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``;
on CPU the growth of the process's peak resident set during the recipe's run, read from
``/proc/self/status`` (``VmHWM``, reset per recipe through ``/proc/self/clear_refs``, Linux);
elsewhere ``resource.getrusage``'s ``ru_maxrss`` growth, which undercounts a recipe that
peaks below an earlier one. :attr:`MemoryProbe.method` says which.

Weights: the ``checkpoint`` given, else the folder ``weights/<recipe>`` inside the package
that registered the recipe (where every embedded default of this project lives); its size is
that of its weight files (safetensors, pickles, ONNX). Training
compute: every ``*.json`` there is searched for run records (a dict with ``steps`` and
``batch_size``, or ``images_seen`` / ``gpu_seconds``): images seen are ``steps * batch_size``
summed, GPU-seconds the ``minutes`` (or ``seconds``) of runs whose ``device`` is CUDA (times
``gpus``), CPU-seconds those of CPU runs; a run without both is counted as untimed. Runs
nested in a run (the record of the run an ``--init`` continued) are counted too.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _maxrss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


class MemoryProbe:
    """Peak memory of what runs between :meth:`start` and :meth:`peak_bytes`."""

    def __init__(self, device: str | torch.device | None) -> None:
        self.device = torch.device(device or "cpu")
        self.cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.method = ""
        self._base: int | None = None

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
            self._base = _status_kib("VmRSS")
            self.method = "peak RSS growth (VmHWM, reset per recipe)"
        except OSError:
            self._base = _maxrss_bytes()
            self.method = "peak RSS growth (ru_maxrss; undercounts after a larger recipe)"

    def peak_bytes(self) -> int | None:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        if self._base is None:
            return None
        if self.method.startswith("peak RSS growth (VmHWM"):
            hwm = _status_kib("VmHWM")
            return None if hwm is None else max(hwm - self._base, 0) * 1024
        now = _maxrss_bytes()
        return None if now is None else max(now - self._base, 0)


def factory_module(factory: Any) -> str:
    """The module a (possibly lazy) recipe factory lives in."""
    target = getattr(factory, "target", None)
    if isinstance(target, str):
        return target.partition(":")[0]
    return str(getattr(factory, "__module__", "") or "")


def weights_path(recipe: str, factory: Any, checkpoint: str | None) -> Path | None:
    """The recipe's weights: ``checkpoint``, else ``<package>/weights/<recipe>`` if present."""
    if checkpoint:
        return Path(checkpoint)
    top = factory_module(factory).partition(".")[0]
    try:
        spec = importlib.util.find_spec(top) if top else None
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "weights" / recipe
        if folder.is_dir():
            return folder
    return None


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".npz")


def file_bytes(path: Path | None) -> int | None:
    """Size of a file, or of the weight files under a folder (:data:`WEIGHT_SUFFIXES`; every
    file when none has one of them); None when there is none."""
    if path is None or not path.exists():
        return None
    if path.is_file():
        return path.stat().st_size
    files = [f for f in path.rglob("*") if f.is_file()]
    weights = [f for f in files if f.suffix.lower() in WEIGHT_SUFFIXES]
    return sum(f.stat().st_size for f in weights or files)


@attrs.define
class TrainingCompute:
    """Training compute recorded with a model (None: not recorded)."""

    gpu_seconds: float | None = None
    cpu_seconds: float | None = None
    images_seen: int | None = None
    runs: int = 0
    untimed_runs: int = 0
    sources: list[str] = attrs.Factory(list)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _is_run(d: dict[str, Any]) -> bool:
    return ("steps" in d and "batch_size" in d) or "images_seen" in d or "gpu_seconds" in d


def _runs(node: Any) -> Iterator[dict[str, Any]]:
    """Every run record under ``node``, those nested in a run included (a run continued with
    ``--init`` keeps the earlier run's record inside its own)."""
    if isinstance(node, dict):
        if _is_run(node):
            yield node
        for value in node.values():
            yield from _runs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _runs(value)


def _run_seconds(run: dict[str, Any]) -> tuple[str, float] | None:
    """``("gpu" | "cpu", seconds)`` of a run, or None when its time or device is not recorded."""
    if isinstance(run.get("gpu_seconds"), (int, float)):
        return "gpu", float(run["gpu_seconds"])
    device = str(run.get("device", ""))
    kind = "gpu" if device.startswith("cuda") else "cpu" if device == "cpu" else None
    if kind is None:
        return None
    gpus = run.get("gpus", run.get("world_size", 1))
    gpus = gpus if isinstance(gpus, int) and gpus > 0 else 1
    if isinstance(run.get("minutes"), (int, float)):
        return kind, 60.0 * run["minutes"] * gpus
    if isinstance(run.get("seconds"), (int, float)):
        return kind, float(run["seconds"]) * gpus
    return None


def _images_seen(run: dict[str, Any]) -> int | None:
    if isinstance(run.get("images_seen"), int):
        return run["images_seen"]
    steps, batch = run.get("steps"), run.get("batch_size")
    return steps * batch if isinstance(steps, int) and isinstance(batch, int) else None


def training_compute(folder: Path | None) -> TrainingCompute:
    """Sum the run records of every ``*.json`` in ``folder`` (the file's own folder for a
    file checkpoint)."""
    out = TrainingCompute()
    if folder is None:
        return out
    folder = folder if folder.is_dir() else folder.parent
    for path in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        runs = list(_runs(doc))
        if runs:
            out.sources.append(path.name)
        for run in runs:
            out.runs += 1
            seconds, seen = _run_seconds(run), _images_seen(run)
            if seconds is None:
                out.untimed_runs += 1
            elif seconds[0] == "gpu":
                out.gpu_seconds = (out.gpu_seconds or 0.0) + seconds[1]
            else:
                out.cpu_seconds = (out.cpu_seconds or 0.0) + seconds[1]
            if seen is not None:
                out.images_seen = (out.images_seen or 0) + seen
    return out
