"""Kernel tests: CPU runs use Triton's interpreter, GPU runs (`-m gpu`) compile for the device.

`TRITON_INTERPRET` must be set before `triton.jit` decorates a kernel. `t2i_kernels` neither
imports Triton nor decorates its kernels until the first launch (see `t2i_kernels.lazy_triton`),
so setting the variable here works even when other test folders imported t2i_kernels first; if
they imported Triton itself, `_reimport_triton_for_the_interpreter` repairs that. On a CUDA
machine the variable is left alone so that the GPU tests compile real kernels.
"""

import os
import sys

import pytest
import torch

import t2i_kernels
from t2i_kernels.lazy_triton import poison_outputs, triton_available


def _reimport_triton_for_the_interpreter() -> None:
    """Make Triton's own `@jit` helpers (tl.sum, tl.max, tl.sigmoid, ...) interpretable.

    `triton.jit` reads TRITON_INTERPRET when it decorates, so if another test folder imported
    `triton.language` before this conftest set the variable, those helpers are compiled-mode
    `JITFunction`s and the interpreter refuses to call them. Dropping Triton's Python modules
    (not its C extension) makes the next `import triton` decorate them again, in interpreter
    mode. Only done on CPU-only runs, where nothing else launches Triton kernels.
    """
    language = sys.modules.get("triton.language")
    if language is None:
        return
    from triton.runtime.interpreter import InterpretedFunction

    if isinstance(language.standard.sum, InterpretedFunction):
        return
    for name in [m for m in sys.modules if m == "triton" or m.startswith("triton.")]:
        if not name.startswith("triton._C"):
            del sys.modules[name]


if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if os.environ["TRITON_INTERPRET"] == "1":
        _reimport_triton_for_the_interpreter()
        # Import it now, in interpreter mode: a first import later could happen inside a test
        # that sets TRITON_INTERPRET=0 and would leave tl.sum & co. compiled-mode for the rest.
        if triton_available():
            import triton.language  # noqa: F401


@pytest.fixture
def triton_cpu():
    """Force the Triton backend on CPU tensors (interpreter), with NaN-poisoned outputs."""
    if not triton_available():
        pytest.skip("triton is not installed")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("CPU Triton tests need TRITON_INTERPRET=1 (set when CUDA is absent)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored after: pixel-exact tests later in this worker need it
    try:
        with t2i_kernels.use_kernels("triton"), poison_outputs():
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def triton_gpu():
    """Force the Triton backend on CUDA, with NaN-poisoned outputs."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if not triton_available():
        pytest.skip("triton is not installed")
    with t2i_kernels.use_kernels("triton"), poison_outputs():
        yield


# Absolute error floors, relative to max(1, |reference|): what rounding the output to the dtype
# alone may cost, so that a PyTorch error of exactly zero does not demand a perfect kernel.
ERROR_FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.fixture
def seed() -> int:
    """A fresh seed per test (reported on failure), so every run draws new inputs."""
    value = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    torch.manual_seed(value)
    return value


@pytest.fixture
def assert_error_rule():
    """The kernel rule: |kernel - ref64| <= 2 * |torch - ref64| + floor (max-abs, per tensor)."""

    def check(name: str, kernel, torch_same, ref64, dtype, seed: int) -> None:
        assert kernel.shape == ref64.shape, f"{name}: shape {kernel.shape} != {ref64.shape}"
        assert torch.isfinite(kernel).all(), f"{name}: non-finite values (seed {seed})"
        ref = ref64.double()
        err_kernel = (kernel.double() - ref).abs().max().item()
        err_torch = (torch_same.double() - ref).abs().max().item()
        floor = ERROR_FLOOR[dtype] * max(1.0, ref.abs().max().item())
        assert err_kernel <= 2 * err_torch + floor, (
            f"{name}: kernel error {err_kernel:.3g} > 2 x PyTorch error {err_torch:.3g} "
            f"+ floor {floor:.3g} ({dtype}, seed {seed})"
        )

    return check
