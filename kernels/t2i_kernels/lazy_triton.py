"""Lazy Triton: kernels that compile on first launch, so `import t2i_kernels` never needs Triton.

Every model family imports `t2i_kernels`, also on machines without Triton or CUDA, so the op
files must not call `triton.jit` at import time. There is a second reason: `triton.jit` reads
`TRITON_INTERPRET` when it decorates a function, and tests set that variable after other code
may already have imported this package. `lazy_jit` therefore stores the Python function and
builds the `JITFunction` (and, on a GPU, the autotuner around it) the first time the kernel is
launched, once per interpreter mode.

Kernel source files keep `from __future__ import annotations`: the annotations of kernel
arguments (`BLOCK: tl.constexpr`) then stay strings, which Triton reads the same way, and `tl`
need not exist when Triton is missing.

The module also owns output allocation for launchers (`new_output`): while `poison_outputs()`
is active every output buffer starts as NaN, so a test sees any element a kernel forgot to write.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import attrs
import torch

__all__ = [
    "KernelConfig",
    "LazyKernel",
    "autotune_enabled",
    "call_path",
    "interpret_mode",
    "lazy_jit",
    "new_output",
    "poison_outputs",
    "run_triton",
    "triton_available",
]


@functools.cache
def triton_available() -> bool:
    """Whether the `triton` package can be imported (it is an optional dependency)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpret_mode() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def autotune_enabled() -> bool:
    """Whether launchers autotune (`T2I_KERNELS_AUTOTUNE`, default on; never in the interpreter).

    With autotuning off each launch uses the first config of the kernel's generated list, the
    hand-picked default for the shape, which saves compile time in GPU test runs.
    """
    if interpret_mode():
        return False
    return os.environ.get("T2I_KERNELS_AUTOTUNE", "1").strip().lower() not in ("0", "false", "off")


@attrs.frozen
class KernelConfig:
    """One launch configuration: meta-parameters plus Triton's `num_warps` / `num_stages`."""

    meta: dict[str, int] = attrs.field(converter=dict)
    num_warps: int = 4
    num_stages: int = 2

    def to_triton(self) -> Any:
        """The equivalent `triton.Config`."""
        import triton

        return triton.Config(dict(self.meta), num_warps=self.num_warps, num_stages=self.num_stages)


ConfigsFn = Callable[[dict[str, Any]], Sequence[KernelConfig]]


CallPath = Literal["custom_op", "autograd", "direct"]


def call_path(*tensors: torch.Tensor | None) -> CallPath:
    """How a public op reaches its Triton launchers for this call.

    * ``"custom_op"`` while torch.compile traces: the `torch.library` custom op, which the
      compiler keeps as one opaque call, with its registered autograd formula;
    * ``"autograd"`` in eager mode when a gradient will be needed: a `torch.autograd.Function`
      around the same launchers (through the custom op, one small-shape attention forward +
      backward cost 1119 us of host time, against 748 us this way; H200, BENCHMARKS.md
      "Kernels");
    * ``"direct"`` for plain inference: the launcher itself.
    """
    if torch.compiler.is_compiling():
        return "custom_op"
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return "autograd"
    return "direct"


def run_triton(
    custom_op: Callable[..., Any],
    function: type[torch.autograd.Function],
    launcher: Callable[..., Any],
    args: Sequence[Any],
    grad_inputs: Sequence[torch.Tensor | None],
) -> Any:
    """Run an op's Triton forward on `args` by the path `call_path(*grad_inputs)` picks: the
    custom op, the autograd function, or the launcher itself."""
    path = call_path(*grad_inputs)
    if path == "custom_op":
        return custom_op(*args)
    if path == "autograd":
        return function.apply(*args)
    return launcher(*args)


class LazyKernel:
    """A Triton kernel built on first launch; `kernel.launch(grid, *args, **constexprs)`.

    Args:
        fn: the kernel's Python function (Triton-language body).
        configs: given the launch's keyword arguments (launchers pass what the configs depend
            on by keyword), the candidate configs, best guess first. `None` means the caller
            passes every meta-parameter itself.
        config_args: the keyword arguments `configs` reads; the chosen launcher is cached per
            their values, so a repeated launch costs one dict lookup on top of Triton's own.
        tune_key: argument names whose values select a tuned config (Triton's autotune `key`).
    """

    def __init__(
        self,
        fn: Callable[..., None],
        configs: ConfigsFn | None,
        config_args: Sequence[str],
        tune_key: Sequence[str],
    ) -> None:
        self.fn = fn
        self.configs = configs
        self.config_args = tuple(config_args)
        self.tune_key = list(tune_key)
        self._jit: dict[bool, Any] = {}
        self._tuned: dict[tuple[str, ...], Any] = {}
        self._runners: dict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = {}
        self._tuned_launch: dict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = {}
        functools.update_wrapper(self, fn)

    def _bind_language(self) -> None:
        # Kernel modules keep `tl = None` until now; the kernel body resolves `tl` through the
        # module globals at compile (or interpret) time.
        import triton.language

        if self.fn.__globals__.get("tl") is None:
            self.fn.__globals__["tl"] = triton.language

    def _jitted(self) -> Any:
        interpret = interpret_mode()
        if interpret not in self._jit:
            import triton

            self._bind_language()
            self._jit[interpret] = triton.jit(self.fn)
        return self._jit[interpret]

    def _autotuned(self, configs: Sequence[KernelConfig]) -> Any:
        # One autotuner per distinct config list: the list depends on constexprs (BLOCK_D, ...).
        key = tuple(repr(c) for c in configs)
        if key not in self._tuned:
            import triton

            self._bind_language()
            self._tuned[key] = triton.autotune(
                configs=[c.to_triton() for c in configs], key=self.tune_key
            )(triton.jit(self.fn))
        return self._tuned[key]

    def _runner(self, kw: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The callable to index with the grid, plus extra launch keywords (a fixed config)."""
        if self.configs is None:
            return self._jitted(), {}
        tune = autotune_enabled()
        key = (interpret_mode(), tune, *(kw.get(name) for name in self.config_args))
        runner = self._runners.get(key)
        if runner is None:
            configs = list(self.configs(kw))
            if not configs:
                raise RuntimeError(f"{self.fn.__name__}: no launch config fits {kw}")
            if len(configs) > 1 and tune:
                runner = (self._autotuned(configs), {})
            else:
                best = configs[0]
                extra = {**best.meta, "num_warps": best.num_warps, "num_stages": best.num_stages}
                runner = (self._jitted(), extra)
            self._runners[key] = runner
        return runner

    def launch(self, grid: Callable[[dict[str, Any]], tuple[int, ...]], *args: Any, **kw: Any):
        """Launch over `grid(meta)`, choosing (or autotuning) the config if the kernel has any."""
        if not triton_available():
            raise RuntimeError(
                f"{self.fn.__name__} needs Triton, which is not installed: "
                "`pip install triton` or use the reference path (T2I_KERNELS=ref)"
            )
        kernel, extra = self._runner(kw)
        if extra or not hasattr(kernel, "best_config"):  # a fixed config: plain JIT launch
            return kernel[grid](*args, **kw, **extra)
        # Autotuned. Once the tuner has chosen for this problem, launch its JIT function with
        # the chosen config: Triton's `Autotuner.run` costs 20-40 us of host time per call.
        tuned_key = self._tuned_key(args, kw)
        chosen = self._tuned_launch.get(tuned_key) if tuned_key is not None else None
        if chosen is not None:
            jit, config = chosen
            return jit[grid](*args, **kw, **config)
        result = kernel[grid](*args, **kw)
        if tuned_key is not None:
            self._tuned_launch[tuned_key] = (kernel.fn, kernel.best_config.all_kwargs())
        return result

    def _tuned_key(self, args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...] | None:
        """What selects a tuned config: the tuning arguments, config arguments and the first
        argument's dtype (the launchers derive every other tensor's dtype from it); None when
        a tuning argument was passed positionally (then never cached)."""
        if any(name not in kw for name in self.tune_key):
            return None
        return (
            *(kw[name] for name in self.tune_key),
            *(kw.get(name) for name in self.config_args),
            getattr(args[0], "dtype", None) if args else None,
        )


def lazy_jit(
    configs: ConfigsFn | None = None,
    config_args: Sequence[str] = (),
    tune_key: Sequence[str] = (),
) -> Callable[[Callable[..., None]], LazyKernel]:
    """Decorator: make a `LazyKernel` (see the module docstring)."""

    def wrap(fn: Callable[..., None]) -> LazyKernel:
        return LazyKernel(fn, configs, config_args, tune_key)

    return wrap


_POISON = {"on": os.environ.get("T2I_KERNELS_POISON", "0") == "1"}


@contextlib.contextmanager
def poison_outputs(enabled: bool = True) -> Iterator[None]:
    """Within the block, buffers made by `new_output` start filled with NaN (for tests)."""
    before = _POISON["on"]
    _POISON["on"] = enabled
    try:
        yield
    finally:
        _POISON["on"] = before


def new_output(like: torch.Tensor, shape: Sequence[int] | None = None, dtype=None) -> torch.Tensor:
    """An uninitialised launcher output: `empty_like(like)` (keeps its memory format) or a new
    contiguous `shape`; NaN-filled under `poison_outputs()`."""
    if shape is None:
        out = torch.empty_like(like, dtype=dtype or like.dtype)
    else:
        out = torch.empty(tuple(shape), device=like.device, dtype=dtype or like.dtype)
    if _POISON["on"] and out.is_floating_point():
        out.fill_(float("nan"))
    return out
