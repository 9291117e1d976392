"""Scaled dot-product attention: a FlashAttention-2 style Triton kernel and its PyTorch reference.

`attention(q, k, v, *, causal=False, attn_mask=None, scale=None)` computes, per batch b and head h,
``softmax(q @ k^T * scale + mask) @ v`` for q of shape (B, H, Sq, D) and k, v of shape
(B, H, Sk, D), with the conventions of `torch.nn.functional.scaled_dot_product_attention`:
`scale` defaults to 1/sqrt(D); `causal=True` lets query i see keys j <= i (top-left aligned, as
SDPA's `is_causal`); `attn_mask` is bool (True = attend) or an additive float, broadcastable to
(B, H, Sq, Sk). A query row whose keys are all masked returns zeros (as SDPA does).

The Triton path (Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work
Partitioning", 2023, Algorithms 1 and 2) never forms the Sq x Sk score matrix:

* forward: one program per (BLOCK_M queries, batch*head) streams key/value blocks, keeps the
  running row maximum m and row sum l of exp2 scores (base-2 online softmax: scores are
  pre-multiplied by scale*log2(e)), rescales its fp32 accumulator when m grows, and writes the
  output and the row log-sum-exp L = m + log2(l) for the backward pass;
* backward: `delta = rowsum(dO * O)`; one kernel per key block recomputes P = exp2(S - L) for all
  query blocks and accumulates dK and dV; a second kernel per query block accumulates dQ. No
  atomics, so gradients are deterministic.

The head dimension is padded to a power of two (40 -> 64, 80 -> 128, 160 -> 256) and masked.
Sequence lengths need not be multiples of the block sizes. On the Triton path `attn_mask` must be
a key-padding mask (its query axis of size 1, e.g. (B, 1, 1, Sk)); other masks, head dims above
256, and differing q/v head dims fall back to the reference under `auto` (see `dispatch.py`).
fp32 inputs use IEEE fp32 products (no TF32) so that fp32 results match fp32 PyTorch.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import attrs
import torch
import torch.nn.functional as F

from t2i_kernels.dispatch import choose_backend
from t2i_kernels.lazy_triton import (
    KernelConfig,
    interpret_mode,
    lazy_jit,
    new_output,
    run_triton,
)

# `tl` is bound to `triton.language` when the first kernel of this module is built (see
# `lazy_triton`): importing Triton here would fix its interpreter mode too early and would
# make Triton a hard dependency.
tl = None

__all__ = ["attention", "attention_ref"]

# torch.library reads `X | None` with a warning; `Optional` is its documented spelling.
_MaybeTensor = Optional[torch.Tensor]  # noqa: UP045

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634


# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------


def _check_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None
) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(
                f"attention: {name} must be 4-D (batch, heads, seq, head_dim), got shape "
                f"{tuple(t.shape)}; reshape with .view(B, S, H, D).transpose(1, 2)"
            )
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(
            "attention: q, k, v must share (batch, heads), got "
            f"{tuple(q.shape[:2])}, {tuple(k.shape[:2])}, {tuple(v.shape[:2])}"
        )
    if k.shape[2] != v.shape[2]:
        raise ValueError(
            f"attention: k and v need the same sequence length, got {k.shape[2]} and {v.shape[2]}"
        )
    if q.shape[3] != k.shape[3]:
        raise ValueError(
            f"attention: q and k need the same head dim, got {q.shape[3]} and {k.shape[3]}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(
            f"attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}; "
            "cast them first"
        )
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            raise ValueError(
                f"attention: attn_mask must be bool (True = attend) or float (added to the "
                f"scores), got {attn_mask.dtype}"
            )
        target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        try:
            torch.broadcast_shapes(tuple(attn_mask.shape), target)
        except RuntimeError:
            raise ValueError(
                f"attention: attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to "
                f"(B, H, Sq, Sk) = {target}; a key-padding mask has shape (B, 1, 1, Sk)"
            ) from None


def _eager_unprofitable() -> str | None:
    """Under ``auto``: PyTorch's SDPA (cuDNN / flash) beat this kernel in eager use at every
    measured SD shape (H200, BENCHMARKS.md "Kernels"), so ``auto`` keeps SDPA; force
    ``T2I_KERNELS=triton`` (or ``use_kernels("triton")``) to run ours."""
    return "PyTorch SDPA is faster in eager mode at the measured shapes"


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Reference attention in plain PyTorch (`F.scaled_dot_product_attention`), same contract as
    `attention`. Differentiable by autograd, exportable to ONNX, runs on any device."""
    _check_inputs(q, k, v, attn_mask)
    mask = attn_mask
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    if causal and mask is not None:
        keep = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
        if mask.dtype == torch.bool:
            mask = mask & keep
        else:
            mask = mask.masked_fill(~keep, float("-inf"))
        causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------


# The launch keywords the config generators below read (LazyKernel caches its choice on them).
_CONFIG_ARGS = ("BLOCK_D", "DOT_PRECISION", "Sk")


def _forward_configs(kw: dict[str, Any]) -> list[KernelConfig]:
    """Forward launch configs, best guess first, pruned by head dim, dtype and key length."""
    if interpret_mode():
        return [
            KernelConfig({"BLOCK_M": 16, "BLOCK_N": 16, "K_ROWS": False}, num_warps=1, num_stages=1)
        ]
    block_d, fp32 = kw["BLOCK_D"], kw["DOT_PRECISION"] == "ieee"
    if block_d <= 64:
        cands = [(128, 64, 4, 3), (128, 128, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3)]
        cands += [(256, 64, 16, 3), (256, 128, 16, 2)]
    elif block_d <= 128:
        cands = [(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2)]
        cands += [(128, 128, 8, 3), (128, 64, 8, 4), (128, 64, 4, 4), (256, 64, 8, 3)]
        # four warp groups of 64 rows: the schedulers overlap one group's softmax with
        # another's matmuls (what FlashAttention-3 arranges by hand as "ping-pong")
        cands += [(256, 128, 16, 2), (256, 64, 16, 3)]
    else:
        cands = [(64, 64, 4, 2), (128, 32, 8, 2), (64, 32, 4, 2), (128, 64, 8, 2)]
    if fp32:  # 4-byte tiles and IEEE dots: halve the key block
        cands = [(bm, max(bn // 2, 16), w, min(s, 2)) for bm, bn, w, s in cands]
    keys = max(16, triton_next_pow2(kw["Sk"]))
    out = []
    for bm, bn, warps, stages in cands:
        if bn > keys or bn > bm:
            continue
        cfg = KernelConfig(
            {"BLOCK_M": bm, "BLOCK_N": bn, "K_ROWS": False}, num_warps=warps, num_stages=stages
        )
        if cfg not in out:
            out.append(cfg)
    if not fp32 and block_d <= 128:  # the same tilings, reading K row-major and transposing
        out += [attrs.evolve(c, meta={**c.meta, "K_ROWS": True}) for c in out]
    fallback = {"BLOCK_M": 64, "BLOCK_N": 16, "K_ROWS": False}
    return out or [KernelConfig(fallback, num_warps=4, num_stages=2)]


def _backward_configs(kw: dict[str, Any]) -> list[KernelConfig]:
    """Backward (dK/dV and dQ kernels) configs: BLOCK_M query rows x BLOCK_N key rows."""
    if interpret_mode():
        return [KernelConfig({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1, num_stages=1)]
    block_d, fp32 = kw["BLOCK_D"], kw["DOT_PRECISION"] == "ieee"
    # (32, 128) suits the dK/dV kernel (many keys per program, few queries per step) and
    # (128, 32) the dQ kernel, as in Triton's Hopper attention tutorial; each kernel autotunes
    # over the whole list on its own.
    if block_d <= 64:
        cands = [(64, 64, 4, 2), (64, 128, 8, 2), (128, 64, 8, 2), (32, 64, 4, 3)]
        cands += [(32, 128, 4, 3), (128, 32, 4, 3), (32, 128, 4, 5), (128, 32, 4, 5)]
    elif block_d <= 128:
        cands = [(64, 64, 8, 2), (32, 64, 4, 2), (64, 32, 4, 2), (64, 128, 8, 2)]
        cands += [(32, 128, 4, 3), (128, 32, 4, 3), (32, 128, 8, 2), (128, 32, 8, 2)]
        cands += [(32, 128, 4, 5), (128, 32, 4, 5)]  # the tutorial's Hopper pipelining depth
        cands += [(64, 128, 8, 3), (32, 128, 8, 3), (64, 64, 4, 3), (16, 128, 4, 4)]
    else:
        cands = [(32, 64, 4, 2), (64, 32, 4, 2), (32, 32, 4, 2), (64, 64, 8, 1)]
    if fp32:
        cands = [(max(bm // 2, 16), max(bn // 2, 16), w, 2) for bm, bn, w, _ in cands]
    out = []
    for bm, bn, warps, stages in cands:
        cfg = KernelConfig({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)
        if cfg not in out:
            out.append(cfg)
    return out


def triton_next_pow2(n: int) -> int:
    """Smallest power of two >= n (Triton block sizes must be powers of two)."""
    return 1 << max(0, int(n) - 1).bit_length()


@lazy_jit(
    configs=_forward_configs,
    config_args=_CONFIG_ARGS,
    tune_key=["Sq", "Sk", "BLOCK_D", "IS_CAUSAL", "HAS_BIAS"],
)
def _attention_fwd_kernel(
    Q,  # (B, H, Sq, D) queries, last dim contiguous
    K,  # (B, H, Sk, D) keys, last dim contiguous
    V,  # (B, H, Sk, D) values, last dim contiguous
    Bias,  # (Bb, Hb, Sk) fp32 additive key bias, Bb in {1, B}, Hb in {1, H}; read if HAS_BIAS
    Out,  # (B, H, Sq, D) output, q's dtype
    Lse,  # (B, H, Sq) fp32 row log2-sum-exp2 of the scaled scores, +inf for fully masked rows
    stride_qb,  # Q (and dQ) batch stride, in elements
    stride_qh,  # Q (and dQ) head stride, in elements
    stride_qm,  # Q (and dQ) row stride, in elements
    stride_kb,  # K (and dK) batch stride, in elements
    stride_kh,  # K (and dK) head stride, in elements
    stride_kn,  # K (and dK) row stride, in elements
    stride_vb,  # V (and dV) batch stride, in elements
    stride_vh,  # V (and dV) head stride, in elements
    stride_vn,  # V (and dV) row stride, in elements
    stride_ob,  # Out batch stride, in elements
    stride_oh,  # Out head stride, in elements
    stride_om,  # Out row stride, in elements
    stride_bb,  # Bias batch stride, in elements
    stride_bh,  # Bias head stride, in elements
    H,  # number of heads (program axis 1 enumerates batch * heads)
    Sq,  # query length
    Sk,  # key length
    HEAD_DIM: tl.constexpr,  # true head dim D <= BLOCK_D (constexpr: exact masks vectorise)
    qk_scale,  # softmax scale * log2(e): scores go straight into exp2
    IS_CAUSAL: tl.constexpr,  # mask keys j > query i
    HAS_BIAS: tl.constexpr,  # add Bias[b, h, j] * log2(e) to the scores
    EVEN_N: tl.constexpr,  # Sk % BLOCK_N == 0: no key bound checks
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs, "tf32" (unused) for 16-bit
    ALIGN: tl.constexpr,  # every stride argument was divided by ALIGN (16-byte row alignment)
    BLOCK_D: tl.constexpr,  # head dim padded to a power of two
    BLOCK_M: tl.constexpr,  # query rows per program
    BLOCK_N: tl.constexpr,  # key rows per inner step
    K_ROWS: tl.constexpr,  # load K tiles as (BLOCK_N, BLOCK_D) rows, then transpose (autotuned)
):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    # Strides arrive divided by ALIGN; multiplying back tells the compiler that rows start on
    # 16-byte boundaries (head dims like 40 and 80 are not multiples of 16 elements).
    stride_qb, stride_qh, stride_qm = stride_qb * ALIGN, stride_qh * ALIGN, stride_qm * ALIGN
    stride_kb, stride_kh, stride_kn = stride_kb * ALIGN, stride_kh * ALIGN, stride_kn * ALIGN
    stride_vb, stride_vh, stride_vn = stride_vb * ALIGN, stride_vh * ALIGN, stride_vn * ALIGN
    stride_ob, stride_oh, stride_om = stride_ob * ALIGN, stride_oh * ALIGN, stride_om * ALIGN
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM

    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm
    q = tl.load(q_ptrs + offs_d[None, :], mask=(offs_m[:, None] < Sq) & d_ok[None, :], other=0.0)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    bias_base = Bias + off_b * stride_bb + off_h * stride_bh

    bias_scale = 1.4426950408889634 / qk_scale  # = 1 / softmax scale
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    hi = Sk
    if IS_CAUSAL:
        hi = tl.minimum(Sk, (start_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        if EVEN_N:
            if K_ROWS:
                k_rows = k_base + cols[:, None] * stride_kn + offs_d[None, :]
                k = tl.trans(tl.load(k_rows, mask=d_ok[None, :]))
            else:
                k = tl.load(
                    k_base + cols[None, :] * stride_kn + offs_d[:, None], mask=d_ok[:, None]
                )
            v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :], mask=d_ok[None, :])
        else:
            col_ok = cols < Sk
            if K_ROWS:
                k_rows = k_base + cols[:, None] * stride_kn + offs_d[None, :]
                k_ok = col_ok[:, None] & d_ok[None, :]
                k = tl.trans(tl.load(k_rows, mask=k_ok, other=0.0))
            else:
                k = tl.load(
                    k_base + cols[None, :] * stride_kn + offs_d[:, None],
                    mask=d_ok[:, None] & col_ok[None, :],
                    other=0.0,
                )
            v = tl.load(
                v_base + cols[:, None] * stride_vn + offs_d[None, :],
                mask=col_ok[:, None] & d_ok[None, :],
                other=0.0,
            )
        s = tl.dot(q, k, input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N) raw scores
        if HAS_BIAS:  # bias / scale, so that s * qk_scale adds bias * log2(e)
            kb = tl.load(bias_base + cols, mask=cols < Sk, other=float("-inf"))
            s += kb[None, :] * bias_scale
        if not EVEN_N:
            s = tl.where((cols < Sk)[None, :], s, float("-inf"))
        if IS_CAUSAL:
            s = tl.where(offs_m[:, None] >= cols[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)  # running max, log2 units
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no visible key yet
        p = tl.math.exp2(s * qk_scale - m_safe[:, None])  # one FMA per score
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        # the rescaled accumulator goes into the matmul as its accumulator (wgmma adds in place)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.math.log2(l_i))
    row_ok = offs_m < Sq
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(Lse + off_bh.to(tl.int64) * Sq + offs_m, lse, mask=row_ok)


@lazy_jit()
def _attention_bwd_delta_kernel(
    Out,  # (B, H, Sq, D) forward output
    dOut,  # (B, H, Sq, D) gradient of the output
    Delta,  # (B, H, Sq) fp32 result: rowsum(dOut * Out)
    stride_ob,  # Out batch stride, in elements
    stride_oh,  # Out head stride, in elements
    stride_om,  # Out row stride, in elements
    stride_db,  # dOut batch stride, in elements
    stride_dh,  # dOut head stride, in elements
    stride_dm,  # dOut row stride, in elements
    H,  # heads
    Sq,  # query length
    HEAD_DIM: tl.constexpr,  # true head dim D <= BLOCK_D
    BLOCK_D: tl.constexpr,  # padded head dim
    BLOCK_M: tl.constexpr,  # rows per program
):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_m[:, None] < Sq) & (offs_d[None, :] < HEAD_DIM)
    o_rows = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om
    do_rows = dOut + off_b * stride_db + off_h * stride_dh + offs_m[:, None] * stride_dm
    o = tl.load(o_rows + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(do_rows + offs_d[None, :], mask=ok, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + off_bh.to(tl.int64) * Sq + offs_m, delta, mask=offs_m < Sq)


@lazy_jit(
    configs=_backward_configs,
    config_args=_CONFIG_ARGS,
    tune_key=["Sq", "Sk", "BLOCK_D", "IS_CAUSAL", "HAS_BIAS"],
)
def _attention_bwd_dkdv_kernel(
    Q,  # (B, H, Sq, D) queries, last dim contiguous
    K,  # (B, H, Sk, D) keys, last dim contiguous
    V,  # (B, H, Sk, D) values, last dim contiguous
    Bias,  # (Bb, Hb, Sk) fp32 additive key bias (unused unless HAS_BIAS)
    dOut,  # (B, H, Sq, D) output gradient, last dim contiguous
    Lse,  # (B, H, Sq) fp32 from the forward pass
    Delta,  # (B, H, Sq) fp32 rowsum(dOut * Out)
    dK,  # (B, H, Sk, D) key gradient out, laid out like K
    dV,  # (B, H, Sk, D) value gradient out, laid out like V
    stride_qb,  # Q (and dQ) batch stride, in elements
    stride_qh,  # Q (and dQ) head stride, in elements
    stride_qm,  # Q (and dQ) row stride, in elements
    stride_kb,  # K (and dK) batch stride, in elements
    stride_kh,  # K (and dK) head stride, in elements
    stride_kn,  # K (and dK) row stride, in elements
    stride_vb,  # V (and dV) batch stride, in elements
    stride_vh,  # V (and dV) head stride, in elements
    stride_vn,  # V (and dV) row stride, in elements
    stride_dob,  # dOut batch stride, in elements
    stride_doh,  # dOut head stride, in elements
    stride_dom,  # dOut row stride, in elements
    stride_bb,  # Bias batch stride, in elements
    stride_bh,  # Bias head stride, in elements
    H,  # number of heads (program axis 1 enumerates batch * heads)
    Sq,  # query length
    Sk,  # key length
    HEAD_DIM: tl.constexpr,  # true head dim D <= BLOCK_D (constexpr: exact masks vectorise)
    qk_scale,  # softmax scale * log2(e)
    sm_scale,  # softmax scale (dK = sm_scale * dS^T Q)
    IS_CAUSAL: tl.constexpr,  # causal mask
    HAS_BIAS: tl.constexpr,  # key bias present
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs
    ALIGN: tl.constexpr,  # every stride argument was divided by ALIGN (16-byte row alignment)
    BLOCK_D: tl.constexpr,  # padded head dim
    BLOCK_M: tl.constexpr,  # query rows per inner step
    BLOCK_N: tl.constexpr,  # key rows owned by this program
):
    start_n = tl.program_id(0) * BLOCK_N
    off_bh = tl.program_id(1)
    # Strides arrive divided by ALIGN; multiplying back tells the compiler that rows start on
    # 16-byte boundaries (head dims like 40 and 80 are not multiples of 16 elements).
    stride_qb, stride_qh, stride_qm = stride_qb * ALIGN, stride_qh * ALIGN, stride_qm * ALIGN
    stride_kb, stride_kh, stride_kn = stride_kb * ALIGN, stride_kh * ALIGN, stride_kn * ALIGN
    stride_vb, stride_vh, stride_vn = stride_vb * ALIGN, stride_vh * ALIGN, stride_vn * ALIGN
    stride_dob, stride_doh, stride_dom = stride_dob * ALIGN, stride_doh * ALIGN, stride_dom * ALIGN
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    n_ok = offs_n < Sk
    kv_mask = n_ok[:, None] & d_ok[None, :]

    k_off = off_b * stride_kb + off_h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :]
    v_off = off_b * stride_vb + off_h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :]
    k = tl.load(K + k_off, mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
    v = tl.load(V + v_off, mask=kv_mask, other=0.0)
    if HAS_BIAS:
        kb = tl.load(Bias + off_b * stride_bb + off_h * stride_bh + offs_n, mask=n_ok, other=0.0)
        kb = kb * 1.4426950408889634
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    do_base = dOut + off_b * stride_dob + off_h * stride_doh
    row_base = off_bh.to(tl.int64) * Sq

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    lo = 0
    if IS_CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
    for start_m in range(lo, Sq, BLOCK_M):
        offs_m = start_m + offs_m0
        m_ok = offs_m < Sq
        qd_mask = m_ok[:, None] & d_ok[None, :]
        q = tl.load(q_base + offs_m[:, None] * stride_qm + offs_d[None, :], mask=qd_mask, other=0.0)
        do_ptrs = do_base + offs_m[:, None] * stride_dom + offs_d[None, :]
        do = tl.load(do_ptrs, mask=qd_mask, other=0.0)
        lse = tl.load(Lse + row_base + offs_m, mask=m_ok, other=float("inf"))
        delta = tl.load(Delta + row_base + offs_m, mask=m_ok, other=0.0)
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M)
        if HAS_BIAS:
            s_t += kb[:, None]
        p_t = tl.math.exp2(s_t - lse[None, :])
        if IS_CAUSAL:
            p_t = tl.where(offs_m[None, :] >= offs_n[:, None], p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)
    dk *= sm_scale
    tl.store(dK + k_off, dk.to(dK.dtype.element_ty), mask=kv_mask)
    tl.store(dV + v_off, dv.to(dV.dtype.element_ty), mask=kv_mask)


@lazy_jit(
    configs=_backward_configs,
    config_args=_CONFIG_ARGS,
    tune_key=["Sq", "Sk", "BLOCK_D", "IS_CAUSAL", "HAS_BIAS"],
)
def _attention_bwd_dq_kernel(
    Q,  # (B, H, Sq, D) queries, last dim contiguous
    K,  # (B, H, Sk, D) keys, last dim contiguous
    V,  # (B, H, Sk, D) values, last dim contiguous
    Bias,  # (Bb, Hb, Sk) fp32 additive key bias (unused unless HAS_BIAS)
    dOut,  # (B, H, Sq, D) output gradient
    Lse,  # (B, H, Sq) fp32 from the forward pass
    Delta,  # (B, H, Sq) fp32 rowsum(dOut * Out)
    dQ,  # (B, H, Sq, D) result, laid out like Q
    stride_qb,  # Q (and dQ) batch stride, in elements
    stride_qh,  # Q (and dQ) head stride, in elements
    stride_qm,  # Q (and dQ) row stride, in elements
    stride_kb,  # K (and dK) batch stride, in elements
    stride_kh,  # K (and dK) head stride, in elements
    stride_kn,  # K (and dK) row stride, in elements
    stride_vb,  # V (and dV) batch stride, in elements
    stride_vh,  # V (and dV) head stride, in elements
    stride_vn,  # V (and dV) row stride, in elements
    stride_dob,  # dOut batch stride, in elements
    stride_doh,  # dOut head stride, in elements
    stride_dom,  # dOut row stride, in elements
    stride_bb,  # Bias batch stride, in elements
    stride_bh,  # Bias head stride, in elements
    H,  # number of heads (program axis 1 enumerates batch * heads)
    Sq,  # query length
    Sk,  # key length
    HEAD_DIM: tl.constexpr,  # true head dim D <= BLOCK_D (constexpr: exact masks vectorise)
    qk_scale,  # softmax scale * log2(e)
    sm_scale,  # softmax scale (dQ = sm_scale * dS K)
    IS_CAUSAL: tl.constexpr,  # causal mask
    HAS_BIAS: tl.constexpr,  # key bias present
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs
    ALIGN: tl.constexpr,  # every stride argument was divided by ALIGN (16-byte row alignment)
    BLOCK_D: tl.constexpr,  # padded head dim
    BLOCK_M: tl.constexpr,  # query rows owned by this program
    BLOCK_N: tl.constexpr,  # key rows per inner step
):
    start_m = tl.program_id(0) * BLOCK_M
    off_bh = tl.program_id(1)
    # Strides arrive divided by ALIGN; multiplying back tells the compiler that rows start on
    # 16-byte boundaries (head dims like 40 and 80 are not multiples of 16 elements).
    stride_qb, stride_qh, stride_qm = stride_qb * ALIGN, stride_qh * ALIGN, stride_qm * ALIGN
    stride_kb, stride_kh, stride_kn = stride_kb * ALIGN, stride_kh * ALIGN, stride_kn * ALIGN
    stride_vb, stride_vh, stride_vn = stride_vb * ALIGN, stride_vh * ALIGN, stride_vn * ALIGN
    stride_dob, stride_doh, stride_dom = stride_dob * ALIGN, stride_doh * ALIGN, stride_dom * ALIGN
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    m_ok = offs_m < Sq
    qd_mask = m_ok[:, None] & d_ok[None, :]

    q_off = off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :]
    q = tl.load(Q + q_off, mask=qd_mask, other=0.0)
    do_ptrs = dOut + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom
    do = tl.load(do_ptrs + offs_d[None, :], mask=qd_mask, other=0.0)
    row_base = off_bh.to(tl.int64) * Sq
    lse = tl.load(Lse + row_base + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(Delta + row_base + offs_m, mask=m_ok, other=0.0)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    bias_base = Bias + off_b * stride_bb + off_h * stride_bh

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    hi = Sk
    if IS_CAUSAL:
        hi = tl.minimum(Sk, start_m + BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        n_ok = offs_n < Sk
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        if HAS_BIAS:
            kb = tl.load(bias_base + offs_n, mask=n_ok, other=0.0)
            s += kb[None, :] * 1.4426950408889634
        p = tl.math.exp2(s - lse[:, None])
        p = tl.where(n_ok[None, :], p, 0.0)
        if IS_CAUSAL:
            p = tl.where(offs_m[:, None] >= offs_n[None, :], p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)
    dq *= sm_scale
    tl.store(dQ + q_off, dq.to(dQ.dtype.element_ty), mask=qd_mask)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _triton_unsupported(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
) -> str | None:
    """Why the Triton kernel cannot run this call (None when it can). Inputs already checked."""
    if q.dtype not in _SUPPORTED_DTYPES:
        return f"dtype {q.dtype} is not one of float16, bfloat16, float32"
    if v.shape[3] != q.shape[3]:
        return f"v's head dim {v.shape[3]} differs from q's {q.shape[3]}"
    if not 1 <= q.shape[3] <= _MAX_HEAD_DIM:
        return f"head dim {q.shape[3]} is outside 1..{_MAX_HEAD_DIM}"
    if q.shape[2] == 0 or k.shape[2] == 0 or q.shape[0] * q.shape[1] == 0:
        return "an empty sequence, batch or head axis"
    if q.shape[0] * q.shape[1] > 65535:
        return f"batch * heads = {q.shape[0] * q.shape[1]} exceeds the 65535 grid limit"
    if attn_mask is not None:
        shape = (1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape)
        if shape[2] != 1:
            return (
                f"attn_mask of shape {tuple(attn_mask.shape)} varies along the query axis; the "
                "kernel takes key-padding masks only, shaped (B, 1, 1, Sk)"
            )
        if attn_mask.requires_grad:
            return "attn_mask requires grad; the kernel gives no gradient to the mask"
    return None


def _key_bias(attn_mask: torch.Tensor | None, q: torch.Tensor, sk: int) -> torch.Tensor | None:
    """Turn a key-padding mask into an fp32 additive bias of shape (Bb, Hb, Sk), Bb in {1, B}."""
    if attn_mask is None:
        return None
    mask = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
    mask = mask[:, :, 0, :]  # (Bb, Hb, Sk or 1)
    if mask.dtype == torch.bool:
        bias = torch.zeros(mask.shape, dtype=torch.float32, device=q.device)
        bias = bias.masked_fill(~mask.to(q.device), float("-inf"))
    else:
        bias = mask.to(device=q.device, dtype=torch.float32)
    return bias.expand(bias.shape[0], bias.shape[1], sk).contiguous()


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _strides3(t: torch.Tensor, align: int = 1) -> tuple[int, int, int]:
    sb, sh, sm, _ = t.stride()
    return sb // align, sh // align, sm // align


def _stride_align(like: torch.Tensor, *tensors: torch.Tensor) -> int:
    """Largest of 8, 4, 2, 1 elements (at most 16 bytes) dividing every batch/head/row stride."""
    align = 16 // like.element_size()
    strides = [s for t in tensors for s in t.stride()[:3]]
    while align > 1 and any(s % align for s in strides):
        align //= 2
    return align


def _bias_args(bias: torch.Tensor | None, q: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    if bias is None:
        return q, 0, 0  # any pointer; never read
    return (
        bias,
        0 if bias.shape[0] == 1 else bias.stride(0),
        0 if bias.shape[1] == 1 else bias.stride(1),
    )


def _precision(q: torch.Tensor) -> str:
    return "ieee" if q.dtype == torch.float32 else "tf32"


def _attention_forward_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel; returns (out, lse) with lse of shape (B, H, Sq) in fp32."""
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    b, h, sq, d = q.shape
    sk = k.shape[2]
    out = new_output(q)
    lse = new_output(q, (b, h, sq), torch.float32)
    bias_t, sbb, sbh = _bias_args(bias, q)

    def grid(meta: dict[str, Any]) -> tuple[int, int]:
        return (triton_cdiv(sq, meta["BLOCK_M"]), b * h)

    even_n = all(sk % bn == 0 for bn in (16, 32, 64, 128))
    align = _stride_align(q, q, k, v, out)
    _attention_fwd_kernel.launch(
        grid,
        q, k, v, bias_t, out, lse,
        *_strides3(q, align), *_strides3(k, align), *_strides3(v, align), *_strides3(out, align),
        sbb, sbh,
        H=h, Sq=sq, Sk=sk, HEAD_DIM=d,
        qk_scale=scale * _LOG2E,
        ALIGN=align,
        IS_CAUSAL=causal,
        HAS_BIAS=bias is not None,
        EVEN_N=even_n,
        DOT_PRECISION=_precision(q),
        BLOCK_D=max(16, triton_next_pow2(d)),
    )  # fmt: skip
    return out, lse


def _attention_backward_triton(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    bias: torch.Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the three backward kernels; returns (dq, dk, dv) laid out like q, k, v."""
    q, k, v, out, grad_out = (_last_dim_contiguous(t) for t in (q, k, v, out, grad_out))
    b, h, sq, d = q.shape
    sk = k.shape[2]
    block_d = max(16, triton_next_pow2(d))
    delta = new_output(q, (b, h, sq), torch.float32)
    delta_rows = 16 if interpret_mode() else 64
    _attention_bwd_delta_kernel.launch(
        lambda meta: (triton_cdiv(sq, delta_rows), b * h),
        out, grad_out, delta,
        *_strides3(out), *_strides3(grad_out),
        h, sq, d,
        BLOCK_D=block_d,
        BLOCK_M=delta_rows,
    )  # fmt: skip
    dq, dk, dv = new_output(q), new_output(k), new_output(v)
    # The kernels write dK/dV with K's/V's strides and dQ with Q's: empty_like keeps them equal
    # for dense inputs; fall back to contiguous copies otherwise.
    if dk.stride() != k.stride() or dv.stride() != v.stride() or dq.stride() != q.stride():
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        dq, dk, dv = new_output(q), new_output(k), new_output(v)
    bias_t, sbb, sbh = _bias_args(bias, q)
    align = _stride_align(q, q, k, v, grad_out)
    common = dict(
        H=h,
        Sq=sq,
        Sk=sk,
        HEAD_DIM=d,
        qk_scale=scale * _LOG2E,
        sm_scale=scale,
        ALIGN=align,
        IS_CAUSAL=causal,
        HAS_BIAS=bias is not None,
        DOT_PRECISION=_precision(q),
        BLOCK_D=block_d,
    )
    _attention_bwd_dkdv_kernel.launch(
        lambda meta: (triton_cdiv(sk, meta["BLOCK_N"]), b * h),
        q, k, v, bias_t, grad_out, lse, delta, dk, dv,
        *_strides3(q, align), *_strides3(k, align), *_strides3(v, align),
        *_strides3(grad_out, align),
        sbb, sbh,
        **common,
    )  # fmt: skip
    _attention_bwd_dq_kernel.launch(
        lambda meta: (triton_cdiv(sq, meta["BLOCK_M"]), b * h),
        q, k, v, bias_t, grad_out, lse, delta, dq,
        *_strides3(q, align), *_strides3(k, align), *_strides3(v, align),
        *_strides3(grad_out, align),
        sbb, sbh,
        **common,
    )  # fmt: skip
    return dq, dk, dv


def triton_cdiv(a: int, b: int) -> int:
    """Ceiling division for grid sizes."""
    return -(-a // b)


# --------------------------------------------------------------------------------------------
# torch.library custom ops (what autograd and torch.compile see)
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("t2i::attention", mutates_args=())
def _attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_bias: _MaybeTensor,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton attention forward. `key_bias`: fp32 (Bb, Hb, Sk) additive bias or None.
    Returns (out, lse): lse is the fp32 (B, H, Sq) base-2 log-sum-exp the backward needs."""
    return _attention_forward_triton(q, k, v, key_bias, causal, scale)


@_attention_op.register_fake
def _attention_op_fake(q, k, v, key_bias, causal, scale):
    out = torch.empty_like(_last_dim_contiguous(q))
    lse = q.new_empty((q.shape[0], q.shape[1], q.shape[2]), dtype=torch.float32)
    return out, lse


@torch.library.custom_op("t2i::attention_backward", mutates_args=())
def _attention_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    key_bias: _MaybeTensor,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton attention backward: (dq, dk, dv)."""
    return _attention_backward_triton(grad_out, q, k, v, out, lse, key_bias, causal, scale)


@_attention_backward_op.register_fake
def _attention_backward_op_fake(grad_out, q, k, v, out, lse, key_bias, causal, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _attention_setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    q, k, v, key_bias, causal, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the statistics
    ctx.save_for_backward(q, k, v, out, lse, key_bias)
    ctx.causal, ctx.scale = causal, scale


def _attention_gradients(ctx: Any, grad_out: torch.Tensor, backward: Any) -> tuple:
    q, k, v, out, lse, key_bias = ctx.saved_tensors
    dq, dk, dv = backward(grad_out, q, k, v, out, lse, key_bias, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None, None


def _attention_autograd_backward(ctx: Any, grad_out: torch.Tensor, _grad_lse: Any) -> tuple:
    return _attention_gradients(ctx, grad_out, _attention_backward_op)


_attention_op.register_autograd(
    _attention_autograd_backward, setup_context=_attention_setup_context
)


class _AttentionFunction(torch.autograd.Function):
    """Eager autograd of the Triton path: the custom op's launchers and context, without the
    custom-op dispatcher's host cost (see `lazy_triton.call_path`)."""

    # The ctx-first forward: a separate `setup_context` makes `Function.apply` bind its
    # arguments with `inspect.signature` on every call.
    @staticmethod
    def forward(ctx, q, k, v, key_bias, causal, scale):
        output = _attention_forward_triton(q, k, v, key_bias, causal, scale)
        _attention_setup_context(ctx, (q, k, v, key_bias, causal, scale), output)
        return output

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        return _attention_gradients(ctx, grad_out, _attention_backward_triton)


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention, Triton on CUDA where supported, else `attention_ref`.

    Args:
        q: (B, H, Sq, D) queries; fp16, bf16 or fp32 (fp32 accumulation in every case).
        k: (B, H, Sk, D) keys, same dtype.
        v: (B, H, Sk, D) values, same dtype.
        causal: query i attends to keys j <= i (top-left aligned, as SDPA's `is_causal`).
        attn_mask: bool (True = attend) or additive float mask broadcastable to (B, H, Sq, Sk).
            The Triton path takes key-padding masks (query axis of size 1); others use the
            reference under `auto` and raise under a forced `triton` backend.
        scale: score scale; default 1/sqrt(D).

    Returns:
        (B, H, Sq, D) tensor in q's dtype. Rows whose keys are all masked are zero.

    Raises:
        ValueError: shapes, dtypes or mask that no backend accepts.
        KernelUnsupportedError: `triton` was forced for a call the kernel cannot run.
    """
    _check_inputs(q, k, v, attn_mask)
    tensors = [q, k, v] if attn_mask is None else [q, k, v, attn_mask]
    backend = choose_backend(
        "attention",
        tensors,
        lambda: _triton_unsupported(q, k, v, attn_mask),
        _eager_unprofitable,
    )
    if backend == "ref":
        return attention_ref(q, k, v, causal=causal, attn_mask=attn_mask, scale=scale)
    sm_scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else float(scale)
    key_bias = _key_bias(attn_mask, q, k.shape[2])
    args = (q, k, v, key_bias, bool(causal), sm_scale)
    out, _ = run_triton(
        _attention_op, _AttentionFunction, _attention_forward_triton, args, (q, k, v)
    )
    return out
