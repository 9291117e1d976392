"""Will a request fit? A dry run of a model call on fake tensors, before any real allocation.

The peak memory of one call (a denoiser step, a decode) is measured by running it under
PyTorch's ``FakeTensorMode`` (tensors with shapes and dtypes but no storage) with
``MemTracker`` counting what it would allocate; the figure is compared with what the device
has free. A request that cannot fit is refused with the number and the fix instead of being
killed by the system at the limit (issue 23).

``T2I_MEMORY_CHECK``: ``auto`` (default: only calls whose input has at least
:data:`AUTO_MIN_ELEMENTS` elements, where running out is possible; results cached per shape),
``always``, ``never``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

import structlog
import torch

log = structlog.get_logger("t2i.memory")

ENV = "T2I_MEMORY_CHECK"
AUTO_MIN_ELEMENTS = 16_384
"""An SD latent of 512x512 (4 x 64 x 64) is the smallest input ``auto`` checks."""
_CACHE: dict[tuple, tuple[weakref.ref | None, int | None]] = {}
"""Estimates by (owner id, extra key parts, shapes, dtype, device), each with a weak reference
to its owner: a hit on an id that a dead owner left to a new object is measured again."""


class InsufficientMemoryError(ValueError):
    """A call would need more memory than the device has free; the message says how much."""


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device``: CUDA's free plus this process's cached-but-unused blocks;
    on the CPU, Linux's ``MemAvailable``. None where it cannot be known."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def dry_run_peak(call: Callable[..., Any], shapes: tuple[tuple[int, ...], ...], dtype, device):
    """Peak bytes ``call(*inputs)`` would allocate for fresh inputs of ``shapes``, measured on
    fake tensors (nothing is allocated). None when the call cannot run on fake tensors."""
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:  # pragma: no cover - a torch without these tools
        return None
    import warnings

    tracker = MemTracker()
    before = _slots(call)
    try:
        with (
            warnings.catch_warnings(),  # a call that fails on fake tensors warns from hooks
            FakeTensorMode(allow_non_fake_inputs=True),
            torch.inference_mode(),
        ):
            warnings.simplefilter("ignore")
            inputs = [torch.empty(s, dtype=dtype, device=device) for s in shapes]
            with tracker:
                call(*inputs)
        peak = tracker.get_tracker_snapshot("peak")
    except Exception as error:
        log.debug("memory.dry_run_skipped", reason=f"{type(error).__name__}: {error}")
        return None
    finally:
        _undo_fakes(call, before)
    return int(sum(stats.get("Total", 0) for stats in peak.values()))


def _reachable_dicts(root: Any, limit: int = 20_000) -> list[dict]:
    """The attribute dicts and plain dicts reachable from ``root`` (closure cells, object
    attributes, dict values, list items; tensors are leaves)."""
    found, seen, stack = [], set(), [root]
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (torch.Tensor, str, bytes, int, float, type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            found.append(obj)
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        else:
            stack.extend(c.cell_contents for c in getattr(obj, "__closure__", None) or ())
            attributes = getattr(obj, "__dict__", None)
            if isinstance(attributes, dict):
                stack.append(attributes)
    return found


def _slots(root: Any) -> dict[int, tuple[dict, dict]]:
    """What every reachable dict holds now (to undo what a dry run cached)."""
    return {id(d): (d, dict(d)) for d in _reachable_dicts(root)}


def _undo_fakes(root: Any, before: dict[int, tuple[dict, dict]]) -> None:
    """Remove every fake tensor a dry run left in a cache or attribute (restoring the value
    that was there), so the real run computes with real tensors."""
    from torch._subclasses.fake_tensor import FakeTensor

    def is_fake(v: Any) -> bool:
        if isinstance(v, (tuple, list)):
            return any(is_fake(x) for x in v)
        return isinstance(v, FakeTensor)

    for d in _reachable_dicts(root):
        old = before.get(id(d), (d, {}))[1]
        for k in [k for k, v in d.items() if is_fake(v)]:
            if k in old and not is_fake(old[k]):
                d[k] = old[k]
            else:
                del d[k]


def check_fits(
    what: str,
    call: Callable[..., Any],
    shapes: tuple[tuple[int, ...], ...],
    *,
    dtype: torch.dtype,
    device: torch.device,
    fix: str = "lower the size or the batch size",
    key: Any = None,
) -> int | None:
    """Refuse ``call`` on inputs of ``shapes`` if its dry-run peak exceeds the free memory.

    ``key`` caches the estimate: the object the call belongs to (or a tuple starting with
    it), held weakly so that a new object given a dead one's id is measured again.

    Returns the estimate (bytes) or None when not checked. Raises
    :class:`InsufficientMemoryError` naming ``what``, both numbers and ``fix``.
    """
    mode = os.environ.get(ENV, "auto").lower()
    if mode == "never" or (mode == "auto" and max(_numel(s) for s in shapes) < AUTO_MIN_ELEMENTS):
        return None
    owner, parts = _owner_of(key)
    cache_key = (*parts, shapes, dtype, str(device))
    hit = _CACHE.get(cache_key) if key is not None else None
    if hit is None or (hit[0] is not None and hit[0]() is not owner):
        hit = (_weak(owner), dry_run_peak(call, shapes, dtype, device))
        if key is not None:
            _CACHE[cache_key] = hit
    needed, free = hit[1], available_bytes(device)
    if needed is None or free is None:
        return needed
    if needed > free:
        raise InsufficientMemoryError(
            f"{what} needs about {_gib(needed)} but {device} has {_gib(free)} free: {fix} "
            f"(estimated by a dry run before allocating; {ENV}=never skips the check)"
        )
    return needed


def _owner_of(key: Any) -> tuple[Any, tuple]:
    """``key`` (an object, or a tuple whose first item is one) -> its owner object and the
    hashable key parts, the owner by its id."""
    head, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
    return head, (id(head), *rest) if _weak(head) is not None else (head, *rest)


def _weak(obj: Any) -> weakref.ref | None:
    try:
        return weakref.ref(obj)
    except TypeError:  # an int, a str ...: keyed by value
        return None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
