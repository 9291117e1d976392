"""The torch modules a component holds, and moving a component without touching a shared one.

Loaders cache what they read (one model object per file while the file is unchanged), so two
pipelines built from one checkpoint hold the same modules. :func:`copy_if_moving` gives a
pipeline its own copy whenever its device or dtype differs from the modules' (a float16
pipeline used to convert, in place, the float32 one built before it), converting each tensor
once, straight into the copy; a component already where the pipeline runs is shared as it is.
:func:`copy_with_tensors` is the copy itself (FP8 conversion uses it with shared tensors).

A tensor converted for one device and dtype is reused by every later copy while that copy is
alive: components that share a module (DALL-E's text embedding and token predictor hold one
transformer) share it on the GPU too, instead of each holding its own converted weights. The
reuse table holds both sides weakly, so dropping the pipelines frees the converted weights
even while a loader's cache keeps the source model.
"""

from __future__ import annotations

import copy
import itertools
import threading
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

_NOT_INSIDE = (str, bytes, int, float, bool, type(None), torch.Tensor, torch.device, torch.dtype)
_NOT_OBJECTS = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
)


def held_modules(component: Any, *, depth: int = 3) -> dict[str, torch.nn.Module]:
    """The outermost ``nn.Module`` s a component holds, by attribute path (``"unet"``,
    ``"predictor.net"``): the component itself when it is a module (name ``""``), else its
    attributes, looked through plain objects, lists, tuples and dicts up to ``depth`` levels.
    Each module is listed once, under the first path found."""
    found: dict[str, torch.nn.Module] = {}
    seen: set[int] = set()

    def visit(value: Any, path: str, level: int) -> None:
        if id(value) in seen or isinstance(value, _NOT_INSIDE) or level > depth:
            return
        seen.add(id(value))
        if isinstance(value, torch.nn.Module):
            found[path] = value
            return
        if isinstance(value, Mapping):
            items = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [(str(i), v) for i, v in enumerate(value)]
        elif hasattr(value, "__dict__") and not isinstance(value, _NOT_OBJECTS):
            items = list(vars(value).items())  # a plain object: a predictor, a wrapper
        else:
            return
        for name, item in items:
            if not name.startswith("__"):
                visit(item, f"{path}.{name}" if path else name, level + 1)

    visit(component, "", 0)
    return found


def _tensors(modules: Mapping[str, torch.nn.Module]):
    return itertools.chain.from_iterable(
        itertools.chain(m.parameters(), m.buffers()) for m in modules.values()
    )


def _off(t: torch.Tensor, device: torch.device | None, dtype: torch.dtype | None) -> bool:
    """Whether moving to ``device`` / ``dtype`` would change tensor ``t``."""
    if device is not None and t.device.type != device.type:
        return True
    if device is not None and device.index is not None and t.device.index != device.index:
        return True
    return dtype is not None and t.is_floating_point() and t.dtype != dtype


def copy_with_tensors(
    component: Any, convert: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> Any:
    """A deep copy of ``component`` whose held modules' parameters and buffers are
    ``convert(tensor)``, each computed once (default: the very same tensors, shared with the
    original, so the copy costs no weights)."""
    memo: dict[int, Any] = {}
    for t in _tensors(held_modules(component)):
        if id(t) not in memo:
            memo[id(t)] = t if convert is None else convert(t)
    return copy.deepcopy(component, memo)


def copy_if_moving(component: Any, device: Any = None, dtype: torch.dtype | None = None) -> Any:
    """``component`` itself when its modules are already on ``device`` in ``dtype`` (floating
    tensors), else a copy whose parameters and buffers are converted on the way
    (:func:`copy_with_tensors`), the original left untouched for whoever else holds it."""
    device = torch.device(device) if device is not None else None
    if not any(_off(t, device, dtype) for t in _tensors(held_modules(component))):
        return component

    def convert(t: torch.Tensor) -> torch.Tensor:
        return _converted(t, device, dtype)

    return copy_with_tensors(component, convert)


_Key = tuple[int, "torch.device | None", "torch.dtype | None"]
_CONVERTED: dict[_Key, tuple[weakref.ref, weakref.ref]] = {}
_CONVERTED_LOCK = threading.Lock()


def _converted(t: torch.Tensor, device: torch.device | None, dtype: torch.dtype | None):
    """``t`` on ``device`` in ``dtype`` (floating tensors; a Parameter stays one): the tensor
    an earlier copy made of this very ``t`` while that one is still alive, else a new one."""
    key = (id(t), device, dtype)
    with _CONVERTED_LOCK:
        hit = _CONVERTED.get(key)
        if hit is not None and hit[0]() is t and (out := hit[1]()) is not None:
            return out
    new = t.detach().to(device=device, dtype=dtype if t.is_floating_point() else None)
    if isinstance(t, torch.nn.Parameter):
        new = torch.nn.Parameter(new, requires_grad=t.requires_grad)
    with _CONVERTED_LOCK:
        if len(_CONVERTED) > 4096:  # drop the entries whose tensors are gone
            for k in [k for k, (src, out) in _CONVERTED.items() if src() is None or out() is None]:
                del _CONVERTED[k]
        _CONVERTED[key] = (weakref.ref(t), weakref.ref(new))
    return new
