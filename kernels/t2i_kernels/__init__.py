"""t2i_kernels: fused Triton kernels for the engine, each with a pure-PyTorch reference.

`attention` and `group_norm` run Triton kernels on CUDA where the shape and dtype are supported
and their `*_ref` PyTorch references elsewhere (CPU, ONNX export, tracing, unsupported shapes).
`use_kernels("auto" | "triton" | "ref")` and the `T2I_KERNELS` environment variable force the
choice; `active_backend()` reports it. Importing this package needs neither Triton nor CUDA.
"""

from t2i_kernels.attention import attention, attention_ref
from t2i_kernels.dispatch import (
    InvalidKernelBackendError,
    KernelUnsupportedError,
    active_backend,
    use_kernels,
)
from t2i_kernels.group_norm import group_norm, group_norm_ref

__all__ = [
    "InvalidKernelBackendError",
    "KernelUnsupportedError",
    "active_backend",
    "attention",
    "attention_ref",
    "group_norm",
    "group_norm_ref",
    "use_kernels",
]
