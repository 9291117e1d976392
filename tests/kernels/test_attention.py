"""t2i_kernels.attention against float64 SDPA: CPU interpreter (tiny, fp32) and GPU (SD shapes)."""

import pytest
import torch

import t2i_kernels
from t2i_kernels import KernelUnsupportedError, attention, attention_ref

GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _inputs(b, h, sq, sk, d, dtype, device="cpu"):
    def make(s):
        return torch.randn(b, h, s, d, device=device, dtype=dtype).requires_grad_()

    return make(sq), make(sk), make(sk)


def _forward_backward(fn, q, k, v, grad, **kw):
    out = fn(q, k, v, **kw)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    return (out, *grads)


def _check_against_references(check, q, k, v, seed, **kw):
    """Run the forced-Triton public op, the same-dtype reference and the float64 reference."""
    grad = torch.randn((*q.shape[:3], v.shape[3]), device=q.device, dtype=q.dtype)
    kernel = _forward_backward(attention, q, k, v, grad, **kw)
    with t2i_kernels.use_kernels("ref"):
        same = _forward_backward(attention_ref, q, k, v, grad, **kw)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    kw64 = dict(kw)
    if kw64.get("attn_mask") is not None and kw64["attn_mask"].is_floating_point():
        kw64["attn_mask"] = kw64["attn_mask"].double()
    ref = _forward_backward(attention_ref, q64, k64, v64, grad.double(), **kw64)
    for name, a, b, r in zip(("out", "dq", "dk", "dv"), kernel, same, ref):
        check(name, a, b, r, q.dtype, seed)
    return kernel


CPU_CASES = {
    "self_d40_s33": dict(b=1, h=2, sq=33, sk=33, d=40),
    "cross_d32_k77": dict(b=1, h=2, sq=17, sk=77, d=32),
    "self_d80_s20": dict(b=2, h=1, sq=20, sk=20, d=80),
    "self_d160_s17": dict(b=1, h=1, sq=17, sk=17, d=160),
    "causal_d40_s33": dict(b=1, h=2, sq=33, sk=33, d=40, causal=True),
    "causal_q20_k33": dict(b=1, h=1, sq=20, sk=33, d=32, causal=True),
    "bool_key_padding": dict(b=2, h=2, sq=19, sk=23, d=40, mask="bool"),
    "float_key_bias": dict(b=2, h=2, sq=19, sk=23, d=32, mask="float"),
    "causal_and_mask_scale": dict(b=2, h=1, sq=21, sk=21, d=32, causal=True, mask="bool", s=0.3),
}


def _mask(kind, b, h, sk, device):
    if kind == "bool":  # (B, 1, 1, Sk): every row keeps at least its first key
        keep = torch.rand(b, 1, 1, sk, device=device) > 0.4
        keep[..., 0] = True
        return keep
    if kind == "float":  # (1, H, 1, Sk) additive bias, some keys pushed far down
        bias = torch.randn(1, h, 1, sk, device=device)
        return bias.masked_fill(torch.rand(1, h, 1, sk, device=device) < 0.2, -1e9)
    return None


@pytest.mark.parametrize("case", list(CPU_CASES), ids=list(CPU_CASES))
def test_interpreter_matches_float64_reference(case, triton_cpu, seed, assert_error_rule):
    spec = dict(CPU_CASES[case])
    causal, mask_kind, scale = (
        spec.pop("causal", False),
        spec.pop("mask", None),
        spec.pop("s", None),
    )
    q, k, v = _inputs(**spec, dtype=torch.float32)
    mask = _mask(mask_kind, spec["b"], spec["h"], spec["sk"], "cpu")
    _check_against_references(
        assert_error_rule, q, k, v, seed, causal=causal, attn_mask=mask, scale=scale
    )


def test_fully_masked_rows_are_zero_with_zero_gradients(triton_cpu, seed):
    q, k, v = _inputs(2, 1, 9, 18, 32, torch.float32)
    keep = torch.ones(2, 1, 1, 18, dtype=torch.bool)
    keep[1] = False  # batch 1 sees no key at all
    out, dq, dk, dv = _forward_backward(
        attention, q, k, v, torch.randn(2, 1, 9, 32), attn_mask=keep
    )
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.equal(dq[1], torch.zeros_like(dq[1])) and torch.equal(dk[1], dk[1] * 0)
    assert torch.equal(dv[1], torch.zeros_like(dv[1]))
    torch.testing.assert_close(out, attention_ref(q, k, v, attn_mask=keep), atol=1e-5, rtol=1e-5)


def test_strided_inputs_in_bshd_layout(triton_cpu, seed):
    # Projections give (B, S, H, D) tensors; the op takes the transposed view without a copy.
    q, k, v = (torch.randn(2, s, 3, 40).transpose(1, 2) for s in (25, 25, 25))
    out = attention(q, k, v)
    torch.testing.assert_close(out, attention_ref(q, k, v), atol=1e-5, rtol=1e-5)


def test_custom_op_passes_opcheck(triton_cpu, seed):
    q, k, v = _inputs(1, 2, 17, 20, 32, torch.float32)
    bias = torch.zeros(1, 1, 20)
    torch.library.opcheck(torch.ops.t2i.attention.default, (q, k, v, bias, False, 0.2))


def test_eager_autograd_matches_the_custom_op(triton_cpu, seed):
    # Eager training runs a torch.autograd.Function, torch.compile the custom op: same numbers.
    q, k, v = _inputs(2, 2, 19, 23, 40, torch.float32)
    grad = torch.randn(2, 2, 19, 40)
    eager = _forward_backward(attention, q, k, v, grad, causal=True)
    assert "AttentionFunction" in type(eager[0].grad_fn).__name__  # not the custom op
    op = lambda q, k, v: torch.ops.t2i.attention(q, k, v, None, True, 40**-0.5)[0]  # noqa: E731
    compiled_path = _forward_backward(op, q, k, v, grad)
    for got, want in zip(eager, compiled_path, strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_query_dependent_mask_is_refused_when_triton_is_forced(triton_cpu):
    q, k, v = _inputs(1, 1, 8, 8, 32, torch.float32)
    mask = torch.ones(8, 8, dtype=torch.bool).tril()
    with pytest.raises(KernelUnsupportedError, match="key-padding"):
        attention(q, k, v, attn_mask=mask)
    with t2i_kernels.use_kernels("auto"):  # auto falls back to the reference
        torch.testing.assert_close(
            attention(q, k, v, attn_mask=mask), attention_ref(q, k, v, attn_mask=mask)
        )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: (torch.randn(2, 8, 4), torch.randn(2, 8, 4), torch.randn(2, 8, 4)), "4-D"),
        (
            lambda: (torch.randn(1, 2, 4, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 6, 8)),
            "k and v",
        ),
        (
            lambda: (torch.randn(1, 2, 4, 8), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)),
            "head dim",
        ),
    ],
)
def test_bad_shapes_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        attention(*make())


# ---------------------------------------------------------------------------------------------
# GPU: full SD shapes (run with `pytest tests/kernels -m gpu`)
# ---------------------------------------------------------------------------------------------

GPU_CASES = {
    # SD1.5 UNet self-attention at 64x64, 32x32, 16x16 latents (batch 2, 8 heads)
    "sd_s4096_d40": dict(b=2, h=8, sq=4096, sk=4096, d=40),
    "sd_s1024_d80": dict(b=2, h=8, sq=1024, sk=1024, d=80),
    "sd_s256_d160": dict(b=2, h=8, sq=256, sk=256, d=160),
    # cross-attention to 77 CLIP tokens
    "sd_cross_d40": dict(b=2, h=8, sq=4096, sk=77, d=40),
    "sd_cross_d160": dict(b=2, h=8, sq=256, sk=77, d=160),
    # SD2 / generic head dims, odd lengths
    "d64_s1000": dict(b=2, h=5, sq=1000, sk=1000, d=64),
    "d128_s333": dict(b=1, h=4, sq=333, sk=333, d=128),
    "causal_d64_s333": dict(b=2, h=4, sq=333, sk=333, d=64, causal=True),
    "mask_d80_k77": dict(b=2, h=8, sq=1024, sk=77, d=80, mask="bool"),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("case", list(GPU_CASES), ids=list(GPU_CASES))
@pytest.mark.parametrize("_gpu", [pytest.param(None, marks=GPU)])
def test_gpu_matches_float64_reference(case, dtype, _gpu, triton_gpu, seed, assert_error_rule):
    spec = dict(GPU_CASES[case])
    causal, mask_kind = spec.pop("causal", False), spec.pop("mask", None)
    if dtype == torch.float32:  # IEEE fp32 products are slow: shorter sequences suffice
        spec["sq"], spec["sk"] = min(spec["sq"], 1024), min(spec["sk"], 1024)
    q, k, v = _inputs(**spec, dtype=dtype, device="cuda")
    mask = _mask(mask_kind, spec["b"], spec["h"], spec["sk"], "cuda")
    _check_against_references(assert_error_rule, q, k, v, seed, causal=causal, attn_mask=mask)


def _gpu_forward_metas() -> list[tuple[int, int, bool]]:
    """Every (BLOCK_M, BLOCK_N, K_ROWS) the forward kernel may autotune to on a GPU, fp16/bf16."""
    import importlib

    module = importlib.import_module("t2i_kernels.attention")
    metas = []
    for block_d in (64, 128, 256):
        kw = {"BLOCK_D": block_d, "DOT_PRECISION": "tf32", "Sk": 4096}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(module, "interpret_mode", lambda: False)
            configs = module._forward_configs(kw)
        metas += [(c.meta["BLOCK_M"], c.meta["BLOCK_N"], c.meta["K_ROWS"]) for c in configs]
    return sorted(set(metas))


@pytest.mark.parametrize(
    "meta", _gpu_forward_metas(), ids=lambda m: f"{m[0]}x{m[1]}{'-krows' if m[2] else ''}"
)
def test_every_gpu_forward_tiling_is_exact(meta, triton_cpu, seed, assert_error_rule, monkeypatch):
    """The GPU's forward tilings, run in the interpreter: odd lengths, causal, cross, padding."""
    import importlib

    from t2i_kernels.lazy_triton import KernelConfig

    module = importlib.import_module("t2i_kernels.attention")
    block_m, block_n, k_rows = meta
    config = KernelConfig(
        {"BLOCK_M": block_m, "BLOCK_N": block_n, "K_ROWS": k_rows}, num_warps=1, num_stages=1
    )
    kernel = module._attention_fwd_kernel
    monkeypatch.setattr(kernel, "configs", lambda kw: [config])
    monkeypatch.setattr(kernel, "_runners", {})
    q, k, v = _inputs(1, 1, 37, 37, 40, torch.float32)
    _check_against_references(assert_error_rule, q, k, v, seed, causal=True)
    q, k, v = _inputs(2, 1, 19, 45, 32, torch.float32)
    mask = torch.rand(2, 1, 1, 45) > 0.3
    _check_against_references(assert_error_rule, q, k, v, seed, attn_mask=mask)
    used = {
        tuple(extra[n] for n in ("BLOCK_M", "BLOCK_N", "K_ROWS"))
        for _, extra in kernel._runners.values()
    }
    assert used == {meta}


def _gpu_backward_blocks() -> list[tuple[int, int]]:
    """Every (BLOCK_M, BLOCK_N) the backward kernels may autotune to on a GPU, fp16/bf16."""
    import importlib

    module = importlib.import_module("t2i_kernels.attention")
    blocks = []
    for block_d in (64, 128, 256):
        kw = {"BLOCK_D": block_d, "DOT_PRECISION": "tf32"}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(module, "interpret_mode", lambda: False)
            configs = module._backward_configs(kw)
        blocks += [(c.meta["BLOCK_M"], c.meta["BLOCK_N"]) for c in configs]
    return sorted(set(blocks))


@pytest.mark.parametrize("blocks", _gpu_backward_blocks(), ids=lambda b: f"{b[0]}x{b[1]}")
def test_every_gpu_backward_block_shape_is_exact(blocks, triton_cpu, seed, assert_error_rule,
                                                 monkeypatch):  # fmt: skip
    """The GPU's backward tilings, run in the interpreter: odd lengths, causal, cross."""
    import importlib

    from t2i_kernels.lazy_triton import KernelConfig

    module = importlib.import_module("t2i_kernels.attention")
    config = KernelConfig({"BLOCK_M": blocks[0], "BLOCK_N": blocks[1]}, num_warps=1, num_stages=1)
    for kernel in (module._attention_bwd_dkdv_kernel, module._attention_bwd_dq_kernel):
        monkeypatch.setattr(kernel, "configs", lambda kw, c=config: [c])
        monkeypatch.setattr(kernel, "_runners", {})
    q, k, v = _inputs(1, 1, 37, 37, 40, torch.float32)
    _check_against_references(assert_error_rule, q, k, v, seed, causal=True)
    q, k, v = _inputs(1, 1, 19, 45, 32, torch.float32)
    _check_against_references(assert_error_rule, q, k, v, seed)
    for kernel in (module._attention_bwd_dkdv_kernel, module._attention_bwd_dq_kernel):
        used = {(extra["BLOCK_M"], extra["BLOCK_N"]) for _, extra in kernel._runners.values()}
        assert used == {blocks}


@pytest.mark.parametrize("_gpu", [pytest.param(None, marks=GPU)])
def test_gpu_autotuned_relaunch_is_exact(_gpu, triton_gpu, seed, assert_error_rule, monkeypatch):
    """After autotuning, launches bypass Triton's Autotuner with the chosen config: both the
    tuning call and the relaunch must meet the error rule, forward and backward."""
    import importlib

    module = importlib.import_module("t2i_kernels.attention")
    monkeypatch.setenv("T2I_KERNELS_AUTOTUNE", "1")
    q, k, v = _inputs(1, 4, 333, 333, 128, torch.float16, device="cuda")
    for _ in range(2):
        _check_against_references(assert_error_rule, q, k, v, seed, causal=True)
    for kernel in (module._attention_fwd_kernel, module._attention_bwd_dq_kernel):
        assert kernel._tuned_launch, f"{kernel.__name__} never reused its tuned config"
