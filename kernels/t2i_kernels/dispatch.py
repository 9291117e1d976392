"""Choosing between the Triton kernels and the pure-PyTorch references.

Every public op (`t2i_kernels.attention`, `t2i_kernels.group_norm`) asks `choose_backend` which
implementation to run. The rule:

* The *requested* backend comes from the innermost `use_kernels(...)` block, else from the
  `T2I_KERNELS` environment variable (`auto`, `triton`, `ref`; `off` is an alias of `ref`),
  else `auto`. `active_backend()` returns it.
* `ref` always runs the reference.
* `auto` runs Triton only where it is sure to work: Triton installed, every tensor on CUDA,
  the op supports the shape/dtype, and no exporter is tracing the model (ONNX export,
  `torch.jit.trace`, `torch.export`) -- and where it was measured faster than PyTorch in
  eager use (each op's ``unprofitable`` rule; see BENCHMARKS.md "Kernels"). Everything else
  gets the reference. Inside
  `torch.compile` the Triton path is kept: it is a `torch.library` custom op that the
  compiler treats as an opaque call.
* `triton` runs Triton or raises `KernelUnsupportedError` naming why it cannot. CPU tensors are
  allowed only with `TRITON_INTERPRET=1` (Triton's interpreter, used by the CPU tests).

Under `torch.compile` the choice costs no graph break. Dynamo cannot trace `ContextVar.get`
(the `use_kernels` variable), `functools.cache` or structlog, so while it traces, the parts of
the rule that do not depend on the tensors -- the requested backend and the reasons that hold
for every call (an exporter tracing, Triton missing) -- come from `_trace_time_state`, a
function Dynamo runs once per call site at trace time and bakes into the graph as a constant
(`torch._dynamo.assume_constant_result`); the tensor checks (device, dtype, shape) are traced
as usual and guarded like any other shape or dtype test, and nothing is logged. The
consequence: **a compiled graph keeps the backend in force when it was traced**. Entering or
leaving a `use_kernels` block, or changing `$T2I_KERNELS`, does not recompile an already
compiled model; compile under the backend you mean to run, or call `torch.compiler.reset()`
after changing it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import structlog
import torch

from t2i_kernels.lazy_triton import interpret_mode, triton_available

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "InvalidKernelBackendError",
    "KernelUnsupportedError",
    "active_backend",
    "choose_backend",
    "use_kernels",
]

log = structlog.get_logger(__name__)

ENV_VAR = "T2I_KERNELS"
BACKENDS = ("auto", "triton", "ref")
_ALIASES = {"off": "ref", "reference": "ref", "torch": "ref", "on": "auto", "": "auto"}

Requested = Literal["auto", "triton", "ref"]
Chosen = Literal["triton", "ref"]

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "t2i_kernels_backend", default=None
)


class InvalidKernelBackendError(ValueError):
    """A backend name that is none of `auto`, `triton`, `ref`."""


class KernelUnsupportedError(RuntimeError):
    """The Triton backend was forced for a call it cannot run."""


def _normalise(name: str, source: str) -> Requested:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKENDS:
        raise InvalidKernelBackendError(
            f"{source}={name!r} is not a kernel backend; use one of {', '.join(BACKENDS)} "
            "('off' also means 'ref')"
        )
    return key  # type: ignore[return-value]


def active_backend() -> Requested:
    """The requested backend: the innermost `use_kernels` block, else `$T2I_KERNELS`, else auto."""
    forced = _override.get()
    if forced is not None:
        return forced  # type: ignore[return-value]
    return _normalise(os.environ.get(ENV_VAR, "auto"), ENV_VAR)


@contextlib.contextmanager
def use_kernels(backend: str) -> Iterator[None]:
    """Force a backend (`"auto"`, `"triton"` or `"ref"`) inside a `with` block.

    The choice is held in a context variable, so it is per thread / per asyncio task and nests.

    Raises:
        InvalidKernelBackendError: for any other name.
    """
    token = _override.set(_normalise(backend, "use_kernels backend"))
    try:
        yield
    finally:
        _override.reset(token)


def _exporting() -> str | None:
    """Why the model is being traced for export right now, or None."""
    if torch.onnx.is_in_onnx_export():
        return "an ONNX export is running (Triton kernels cannot be exported)"
    if torch.jit.is_tracing():
        return "torch.jit.trace is running (Triton kernels cannot be traced)"
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    if is_exporting is not None and is_exporting():
        return "torch.export is running (the exported graph must not hold Triton ops)"
    return None


def _device_problem(tensors: Sequence[torch.Tensor]) -> str | None:
    devices = {t.device.type for t in tensors}
    if devices == {"cuda"}:
        return None
    if devices == {"cpu"} and interpret_mode():
        return None
    if devices <= {"cuda", "cpu"} and len(devices) > 1:
        return "the tensors are on different devices (cpu and cuda)"
    return (
        f"the tensors are on {'/'.join(sorted(devices))}; the Triton kernels need CUDA tensors "
        "(or TRITON_INTERPRET=1 for CPU tensors in Triton's interpreter)"
    )


def _static_reason() -> str | None:
    """Why Triton cannot run any call right now (an exporter tracing, Triton missing), or None."""
    reason = _exporting()
    if reason is None and not triton_available():
        reason = "Triton is not installed (`pip install triton`)"
    return reason


def _trace_time_state() -> tuple[str, str]:
    """``(requested backend, static reason or "")``, evaluated eagerly when Dynamo traces a call
    site and kept in the graph as a constant (see the module docstring)."""
    requested = active_backend()
    return requested, ("" if requested == "ref" else (_static_reason() or ""))


# What `torch._dynamo.assume_constant_result` does, without importing torch._dynamo here: that
# import costs ~1.5 s, and every `t2i` command imports this module (tests/kernels/test_dispatch.py
# checks the decorator still means this attribute).
_trace_time_state._dynamo_marked_constant = True  # type: ignore[attr-defined]


def choose_backend(
    op: str,
    tensors: Sequence[torch.Tensor],
    unsupported: str | Callable[[], str | None] | None,
    unprofitable: Callable[[], str | None] | None = None,
) -> Chosen:
    """Pick the implementation of `op` for this call (see the module docstring).

    Args:
        op: the op's name, for messages (`"attention"`).
        tensors: the call's tensor arguments (device checks).
        unsupported: the op's own reason why Triton cannot run this shape/dtype, or None; or a
            function returning it, called only when the other checks pass.
        unprofitable: under ``auto`` only, a function giving the reason the Triton kernel
            would be slower than PyTorch for this call (measured, see BENCHMARKS.md), or None.

    Raises:
        KernelUnsupportedError: the Triton backend is forced and cannot run this call.
    """
    compiling = torch.compiler.is_compiling()
    if compiling:
        requested, static = _trace_time_state()
        reason = static or None
    else:
        requested = active_backend()
    if requested == "ref":
        return "ref"
    if not compiling:
        reason = _static_reason()
    if reason is None:
        on_cuda = all(t.device.type == "cuda" for t in tensors)
        if requested == "auto" and not on_cuda:
            return "ref"  # the interpreter is only for forced runs
        reason = _device_problem(tensors)
    if reason is None:
        reason = unsupported() if callable(unsupported) else unsupported
    if reason is None and requested == "auto" and unprofitable is not None:
        slower = unprofitable()
        if slower is not None:
            if not compiling:
                log.debug("kernel_unprofitable", op=op, reason=slower)
            return "ref"
    if reason is None:
        return "triton"
    if requested == "triton":
        raise KernelUnsupportedError(
            f"T2I_KERNELS=triton forces the Triton {op} kernel, but it cannot run here: {reason}. "
            "Use the 'auto' backend to fall back to the PyTorch reference."
        )
    if not compiling:
        log.debug("kernel_fallback", op=op, reason=reason)
    return "ref"
