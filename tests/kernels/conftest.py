"""Kernel tests: CPU runs use Triton's interpreter, GPU runs (`-m gpu`) compile for the device.

`TRITON_INTERPRET` must be set before `triton.jit` decorates a kernel. `t2i_kernels` compiles its
kernels lazily (see `t2i_kernels.lazy_triton`), so setting the variable here works even when other
test folders imported torch, triton or t2i_kernels first. On a CUDA machine the variable is left
alone so that the GPU tests compile real kernels.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import t2i_kernels
from t2i_kernels.lazy_triton import poison_outputs, triton_available


@pytest.fixture
def triton_cpu():
    """Force the Triton backend on CPU tensors (interpreter), with NaN-poisoned outputs."""
    if not triton_available():
        pytest.skip("triton is not installed")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("CPU Triton tests need TRITON_INTERPRET=1 (set when CUDA is absent)")
    torch.set_num_threads(1)
    with t2i_kernels.use_kernels("triton"), poison_outputs():
        yield


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
