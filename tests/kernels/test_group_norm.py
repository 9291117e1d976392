"""t2i_kernels.group_norm against float64 F.group_norm: CPU interpreter and GPU (SD shapes)."""

import pytest
import torch

import t2i_kernels
from t2i_kernels import KernelUnsupportedError, group_norm, group_norm_ref

GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _forward_backward(fn, x, groups, weight, bias, grad, activation, eps=1e-5):
    y = fn(x, groups, weight, bias, eps, activation=activation)
    params = [t for t in (x, weight, bias) if t is not None]
    return (y, *torch.autograd.grad(y, params, grad))


def _check(
    check,
    shape,
    groups,
    dtype,
    seed,
    *,
    device="cpu",
    channels_last=False,
    affine=True,
    activation="silu",
    offset=0.0,
):
    c = shape[1]
    x = torch.randn(shape, device=device, dtype=dtype) * 2 + offset
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(c, device=device, dtype=dtype).requires_grad_() if affine else None
    bias = torch.randn(c, device=device, dtype=dtype).requires_grad_() if affine else None
    grad = torch.randn(shape, device=device, dtype=dtype)
    kernel = _forward_backward(group_norm, x, groups, weight, bias, grad, activation)
    if channels_last:
        assert kernel[0].is_contiguous(memory_format=torch.channels_last)
    with t2i_kernels.use_kernels("ref"):
        same = _forward_backward(group_norm_ref, x, groups, weight, bias, grad, activation)
    x64, w64, b64 = (
        None if t is None else t.detach().double().requires_grad_() for t in (x, weight, bias)
    )
    ref = _forward_backward(group_norm_ref, x64, groups, w64, b64, grad.double(), activation)
    names = ("y", "dx", "dweight", "dbias")
    for name, a, b, r in zip(names, kernel, same, ref):
        check(name, a, b, r, dtype, seed)


CPU_CASES = {
    "nchw_7x5_silu": dict(shape=(2, 20, 7, 5), groups=4),
    "channels_last_7x5": dict(shape=(2, 20, 7, 5), groups=4, channels_last=True),
    "nchw_no_affine_no_act": dict(shape=(2, 12, 5, 3), groups=3, affine=False, activation=None),
    "many_chunks_16x16": dict(shape=(1, 8, 16, 16), groups=2),
    "large_mean_offset": dict(shape=(1, 6, 9, 11), groups=3, offset=300.0, activation=None),
    "seq_3d_odd_channels": dict(shape=(2, 9, 33), groups=3),
    "spatial_1x1": dict(shape=(3, 24, 1, 1), groups=6),
}


@pytest.mark.parametrize("case", list(CPU_CASES), ids=list(CPU_CASES))
def test_interpreter_matches_float64_reference(case, triton_cpu, seed, assert_error_rule):
    spec = dict(CPU_CASES[case])
    _check(assert_error_rule, spec.pop("shape"), spec.pop("groups"), torch.float32, seed, **spec)


def test_custom_op_passes_opcheck(triton_cpu, seed):
    x = torch.randn(2, 8, 5, 3, requires_grad=True)
    w, b = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
    torch.library.opcheck(torch.ops.t2i.group_norm.default, (x, w, b, 4, 1e-5, "silu"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x=torch.randn(2, 10, 4), num_groups=3), "divisor"),
        (dict(x=torch.randn(2, 8, 4), num_groups=2, weight=torch.ones(4)), r"shape \(8,\)"),
        (dict(x=torch.randn(2, 8, 4), num_groups=2, activation="gelu"), "silu"),
        (dict(x=torch.randn(8), num_groups=2), "batch"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        group_norm(**kwargs)


def test_forced_triton_refuses_float64_input(triton_cpu):
    with pytest.raises(KernelUnsupportedError, match="dtype"):
        group_norm(torch.ones(1, 4, 3, dtype=torch.float64), 2)


# ---------------------------------------------------------------------------------------------
# GPU: SD UNet and VAE shapes (run with `pytest tests/kernels -m gpu`)
# ---------------------------------------------------------------------------------------------

GPU_CASES = {
    "unet_320x64x64": dict(shape=(2, 320, 64, 64), groups=32),
    "unet_640x32x32": dict(shape=(2, 640, 32, 32), groups=32),
    "unet_1280x16x16": dict(shape=(2, 1280, 16, 16), groups=32),
    "vae_128x512x512": dict(shape=(2, 128, 512, 512), groups=32),
    "vae_512x128x128_channels_last": dict(shape=(2, 512, 128, 128), groups=32, channels_last=True),
    "odd_7x5_no_affine": dict(shape=(3, 96, 7, 5), groups=32, affine=False, activation=None),
    "odd_channels_33x17": dict(shape=(2, 60, 33, 17), groups=6, offset=50.0),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("case", list(GPU_CASES), ids=list(GPU_CASES))
@pytest.mark.parametrize("_gpu", [pytest.param(None, marks=GPU)])
def test_gpu_matches_float64_reference(case, dtype, _gpu, triton_gpu, seed, assert_error_rule):
    spec = dict(GPU_CASES[case])
    _check(
        assert_error_rule, spec.pop("shape"), spec.pop("groups"), dtype, seed, device="cuda", **spec
    )


def test_eager_autograd_matches_the_custom_op(triton_cpu, seed):
    # Eager training runs a torch.autograd.Function, torch.compile the custom op: same numbers.
    x = torch.randn(2, 12, 7, 5, requires_grad=True)
    w, b = torch.randn(12, requires_grad=True), torch.randn(12, requires_grad=True)
    grad = torch.randn(2, 12, 7, 5)
    y = group_norm(x, 3, w, b, activation="silu")
    assert "GroupNormFunction" in type(y.grad_fn).__name__  # not the custom op
    eager = (y, *torch.autograd.grad(y, (x, w, b), grad))
    y_op = torch.ops.t2i.group_norm(x, w, b, 3, 1e-5, "silu")[0]
    via_op = (y_op, *torch.autograd.grad(y_op, (x, w, b), grad))
    for got, want in zip(eager, via_op, strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_inference_path_without_autograd(triton_cpu, seed):
    # Without grad the public op launches the kernels directly (no custom-op dispatch).
    x = torch.randn(2, 12, 6, 5).to(memory_format=torch.channels_last)
    w, b = torch.randn(12), torch.randn(12)
    with torch.no_grad():
        y = group_norm(x, 3, w, b, activation="silu")
    torch.testing.assert_close(y, group_norm_ref(x, 3, w, b, activation="silu"))
