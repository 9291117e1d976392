"""Group normalisation (optionally fused with SiLU): Triton kernels and the PyTorch reference.

`group_norm(x, num_groups, weight, bias, eps, *, activation=None | "silu")` normalises x of shape
(N, C, *spatial) over each group of C / num_groups channels and all spatial positions
(Wu & He, "Group Normalization", ECCV 2018, eq. 1-3), applies the per-channel affine
``y = xhat * weight[c] + bias[c]`` and, with `activation="silu"`, ``y * sigmoid(y)``
(Elfwing et al. 2017) - the ``GroupNorm -> SiLU`` pair that opens every ResNet block of the
Stable Diffusion UNet and VAE. Statistics are fp32 for every input dtype; the variance is the
biased one, as in `torch.nn.functional.group_norm`.

The Triton forward runs in two passes, so that one (sample, group) is spread over many programs
(PyTorch uses one program per group, which starves the GPU at 2x128x512x512, 64 groups):

1. `_group_norm_stats_kernel`, grid (N*G, chunks): each program reduces one spatial chunk of
   one group to (count, mean, M2), shifting by its first tile's mean for stability;
2. `_group_norm_apply_kernel`, same grid: each program merges its group's chunk statistics
   (Chan et al. 1979 parallel variance), then normalises, scales, shifts and applies SiLU to its
   chunk in one read and one write. Chunk 0 stores the group's mean and 1/std for backward.

Backward, with xhat = (x - mean) * rstd and dz the gradient at the affine output (after the
SiLU derivative): ``dx = rstd * (w*dz - mean_g(w*dz) - xhat * mean_g(w*dz*xhat))``,
``dweight = sum(dz * xhat)``, ``dbias = sum(dz)``. `_group_norm_bwd_sums_kernel` writes
per-(sample, chunk, channel) sums of dz*xhat and dz; `_group_norm_bwd_dx_kernel` folds them
into the group means and writes dx; dweight/dbias are the sums over samples and chunks.

The kernels address x as (N, C, S) with three strides, so contiguous (NCHW) and channels-last
(NHWC) inputs both work without copies, and the output keeps the input's memory format.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from t2i_kernels.dispatch import choose_backend
from t2i_kernels.lazy_triton import interpret_mode, lazy_jit, new_output, run_triton

# `tl` is bound to `triton.language` when the first kernel of this module is built (see
# `lazy_triton`): importing Triton here would fix its interpreter mode too early and would
# make Triton a hard dependency.
tl = None

__all__ = ["group_norm", "group_norm_ref"]

# torch.library reads `X | None` with a warning; `Optional` is its documented spelling.
_MaybeTensor = Optional[torch.Tensor]  # noqa: UP045

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_ACTIVATIONS = (None, "silu")
_MAX_CHANNELS_PER_GROUP = 1024
_MAX_CHUNKS = 256


# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------


def _check_inputs(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    activation: str | None,
) -> None:
    if x.dim() < 2:
        raise ValueError(
            f"group_norm: x must be (N, C, *spatial), got shape {tuple(x.shape)}; add a batch axis"
        )
    c = x.shape[1]
    if not isinstance(num_groups, int) or num_groups < 1 or c % num_groups:
        raise ValueError(
            f"group_norm: num_groups={num_groups!r} must be a positive divisor of the channel "
            f"count {c}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"group_norm: {name} must have shape ({c},), got {tuple(t.shape)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"group_norm: activation={activation!r} is not supported; use None or 'silu'"
        )


EAGER_MIN_ELEMENTS = 1 << 22
"""Below this many elements the Triton path loses to ``F.group_norm`` in eager mode: its
host-side cost (about 0.1 ms, two Triton launches; BENCHMARKS.md "Kernels", H200) outweighs
the GPU time saved."""


def _eager_unprofitable(x: torch.Tensor) -> str | None:
    if x.numel() < EAGER_MIN_ELEMENTS:
        return f"{x.numel()} elements < {EAGER_MIN_ELEMENTS}: PyTorch is faster in eager mode"
    return None


def group_norm_ref(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    *,
    activation: str | None = None,
) -> torch.Tensor:
    """Reference: `F.group_norm` then optional `F.silu`; same contract as `group_norm`."""
    _check_inputs(x, num_groups, weight, bias, activation)
    y = F.group_norm(x, num_groups, weight, bias, eps)
    if activation == "silu":
        y = F.silu(y)
    return y


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------


@lazy_jit()
def _group_norm_stats_kernel(
    X,  # input, element (n, c, s) at n*stride_xn + c*stride_xc + s*stride_xs
    PartCount,  # (N*G, NUM_CHUNKS) fp32 out: elements in each chunk
    PartMean,  # (N*G, NUM_CHUNKS) fp32 out: chunk mean
    PartM2,  # (N*G, NUM_CHUNKS) fp32 chunk sums of squared deviations
    stride_xn,  # X sample stride, in elements
    stride_xc,  # X channel stride, in elements
    stride_xs,  # X spatial stride, in elements
    S,  # spatial size (H*W)
    G,  # number of groups
    CPG,  # channels per group
    S_PER_CHUNK,  # spatial positions per chunk, a multiple of BLOCK_S
    NUM_CHUNKS,  # chunks per group (program axis 1)
    BLOCK_C: tl.constexpr,  # CPG padded to a power of two
    BLOCK_S: tl.constexpr,  # spatial positions per tile
):
    ng = tl.program_id(0)
    chunk = tl.program_id(1)
    n = ng // G
    g = ng % G
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < CPG
    base = X + n.to(tl.int64) * stride_xn + (g * CPG + offs_c)[:, None].to(tl.int64) * stride_xc
    s_start = chunk * S_PER_CHUNK
    s_end = tl.minimum(s_start + S_PER_CHUNK, S)
    offs_s = s_start + tl.arange(0, BLOCK_S)

    # Shift by the first tile's mean: sums of (x - shift) then lose no precision to a large mean.
    ok = c_ok[:, None] & (offs_s < s_end)[None, :]
    x = tl.load(base + offs_s[None, :].to(tl.int64) * stride_xs, mask=ok, other=0.0).to(tl.float32)
    first_count = tl.sum(tl.sum(ok.to(tl.float32), 1), 0)
    shift = tl.sum(tl.sum(x, 1), 0) / first_count
    xs = tl.where(ok, x - shift, 0.0)
    acc1 = xs
    acc2 = xs * xs
    for s0 in range(s_start + BLOCK_S, s_end, BLOCK_S):
        offs = s0 + tl.arange(0, BLOCK_S)
        tile_ok = c_ok[:, None] & (offs < s_end)[None, :]
        tile = tl.load(base + offs[None, :].to(tl.int64) * stride_xs, mask=tile_ok, other=0.0)
        centred = tl.where(tile_ok, tile.to(tl.float32) - shift, 0.0)
        acc1 += centred
        acc2 += centred * centred
    count = (CPG * (s_end - s_start)).to(tl.float32)
    sum1 = tl.sum(tl.sum(acc1, 1), 0)
    sum2 = tl.sum(tl.sum(acc2, 1), 0)
    mean_shifted = sum1 / count
    m2 = tl.maximum(sum2 - sum1 * mean_shifted, 0.0)
    out = ng * NUM_CHUNKS + chunk
    tl.store(PartCount + out, count)
    tl.store(PartMean + out, shift + mean_shifted)
    tl.store(PartM2 + out, m2)


@lazy_jit()
def _group_norm_apply_kernel(
    X,  # input, element (n, c, s) at n*stride_xn + c*stride_xc + s*stride_xs
    Y,  # output, same indexing with the stride_y* strides
    W,  # (C,) weight (unused unless HAS_WEIGHT)
    Bias,  # (C,) bias (unused unless HAS_BIAS)
    PartCount,  # (N*G, NUM_CHUNKS) fp32 chunk element counts
    PartMean,  # (N*G, NUM_CHUNKS) fp32 chunk means
    PartM2,  # (N*G, NUM_CHUNKS) fp32 chunk sums of squared deviations
    Mean,  # (N*G,) fp32 group means
    Rstd,  # (N*G,) fp32 group 1/sqrt(var + eps)
    stride_xn,  # X sample stride, in elements
    stride_xc,  # X channel stride, in elements
    stride_xs,  # X spatial stride, in elements
    stride_yn,  # Y sample stride, in elements
    stride_yc,  # Y channel stride, in elements
    stride_ys,  # Y spatial stride, in elements
    S,  # spatial size (product of the spatial dims)
    G,  # number of groups
    CPG,  # channels per group
    S_PER_CHUNK,  # spatial positions per chunk, a multiple of BLOCK_S
    NUM_CHUNKS,  # chunks per group
    eps,  # variance epsilon
    HAS_WEIGHT: tl.constexpr,  # multiply by W[c]
    HAS_BIAS: tl.constexpr,  # add Bias[c]
    SILU: tl.constexpr,  # apply y * sigmoid(y)
    BLOCK_C: tl.constexpr,  # CPG padded to a power of two
    BLOCK_S: tl.constexpr,  # spatial positions per tile
    BLOCK_CHUNKS: tl.constexpr,  # NUM_CHUNKS padded to a power of two
):
    ng = tl.program_id(0)
    chunk = tl.program_id(1)
    n = ng // G
    g = ng % G

    # Merge the group's chunk statistics (Chan, Golub & LeVeque pairwise variance).
    offs_k = tl.arange(0, BLOCK_CHUNKS)
    k_ok = offs_k < NUM_CHUNKS
    cnt = tl.load(PartCount + ng * NUM_CHUNKS + offs_k, mask=k_ok, other=0.0)
    mu = tl.load(PartMean + ng * NUM_CHUNKS + offs_k, mask=k_ok, other=0.0)
    m2 = tl.load(PartM2 + ng * NUM_CHUNKS + offs_k, mask=k_ok, other=0.0)
    total = tl.sum(cnt, 0)
    mean = tl.sum(cnt * mu, 0) / total
    dev = mu - mean
    var = tl.sum(m2 + cnt * dev * dev, 0) / total
    rstd = 1.0 / tl.sqrt(var + eps)
    if chunk == 0:
        tl.store(Mean + ng, mean)
        tl.store(Rstd + ng, rstd)

    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < CPG
    ch = g * CPG + offs_c
    scale = tl.full([BLOCK_C], 1.0, dtype=tl.float32) * rstd
    if HAS_WEIGHT:
        scale = scale * tl.load(W + ch, mask=c_ok, other=0.0).to(tl.float32)
    shift = -mean * scale
    if HAS_BIAS:
        shift += tl.load(Bias + ch, mask=c_ok, other=0.0).to(tl.float32)

    x_base = X + n.to(tl.int64) * stride_xn + ch[:, None].to(tl.int64) * stride_xc
    y_base = Y + n.to(tl.int64) * stride_yn + ch[:, None].to(tl.int64) * stride_yc
    s_start = chunk * S_PER_CHUNK
    s_end = tl.minimum(s_start + S_PER_CHUNK, S)
    for s0 in range(s_start, s_end, BLOCK_S):
        offs = (s0 + tl.arange(0, BLOCK_S)).to(tl.int64)
        ok = c_ok[:, None] & (offs < s_end)[None, :]
        x = tl.load(x_base + offs[None, :] * stride_xs, mask=ok, other=0.0).to(tl.float32)
        y = x * scale[:, None] + shift[:, None]
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(y_base + offs[None, :] * stride_ys, y.to(Y.dtype.element_ty), mask=ok)


@lazy_jit()
def _group_norm_bwd_sums_kernel(
    X,  # forward input, (n, c, s) via the stride_x* strides
    dY,  # output gradient, (n, c, s) via the stride_d* strides
    W,  # (C,) weight (unused unless HAS_WEIGHT)
    Bias,  # (C,) bias (unused unless HAS_BIAS; only SiLU needs it)
    Mean,  # (N*G,) fp32 group means
    Rstd,  # (N*G,) fp32 group 1/sqrt(var + eps)
    PartDzXhat,  # (N, NUM_CHUNKS, C) fp32 out: per-chunk sum over s of dz * xhat
    PartDz,  # (N, NUM_CHUNKS, C) fp32 per-chunk sums of dz
    stride_xn,  # X sample stride, in elements
    stride_xc,  # X channel stride, in elements
    stride_xs,  # X spatial stride, in elements
    stride_dn,  # dY sample stride, in elements
    stride_dc,  # dY channel stride, in elements
    stride_ds,  # dY spatial stride, in elements
    C,  # number of channels
    S,  # spatial size (product of the spatial dims)
    G,  # number of groups
    CPG,  # channels per group
    S_PER_CHUNK,  # spatial positions per chunk
    NUM_CHUNKS,  # chunks per group
    HAS_WEIGHT: tl.constexpr,  # affine weight present
    HAS_BIAS: tl.constexpr,  # affine bias present
    SILU: tl.constexpr,  # the forward applied SiLU: dz = dy * d silu(z) / dz
    BLOCK_C: tl.constexpr,  # CPG padded to a power of two
    BLOCK_S: tl.constexpr,  # spatial positions per tile
):
    ng = tl.program_id(0)
    chunk = tl.program_id(1)
    n = ng // G
    g = ng % G
    mean = tl.load(Mean + ng)
    rstd = tl.load(Rstd + ng)
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < CPG
    ch = g * CPG + offs_c
    w = tl.full([BLOCK_C], 1.0, dtype=tl.float32)
    if HAS_WEIGHT:
        w = tl.load(W + ch, mask=c_ok, other=0.0).to(tl.float32)
    b = tl.zeros([BLOCK_C], dtype=tl.float32)
    if HAS_BIAS:
        b = tl.load(Bias + ch, mask=c_ok, other=0.0).to(tl.float32)

    x_base = X + n.to(tl.int64) * stride_xn + ch[:, None].to(tl.int64) * stride_xc
    d_base = dY + n.to(tl.int64) * stride_dn + ch[:, None].to(tl.int64) * stride_dc
    acc_dzx = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
    acc_dz = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
    s_start = chunk * S_PER_CHUNK
    s_end = tl.minimum(s_start + S_PER_CHUNK, S)
    for s0 in range(s_start, s_end, BLOCK_S):
        offs = (s0 + tl.arange(0, BLOCK_S)).to(tl.int64)
        ok = c_ok[:, None] & (offs < s_end)[None, :]
        x = tl.load(x_base + offs[None, :] * stride_xs, mask=ok, other=0.0).to(tl.float32)
        dz = tl.load(d_base + offs[None, :] * stride_ds, mask=ok, other=0.0).to(tl.float32)
        xhat = (x - mean) * rstd
        if SILU:
            z = xhat * w[:, None] + b[:, None]
            sig = tl.sigmoid(z)
            dz = dz * sig * (1.0 + z * (1.0 - sig))
        acc_dzx += tl.where(ok, dz * xhat, 0.0)
        acc_dz += dz
    out = (n.to(tl.int64) * NUM_CHUNKS + chunk) * C + ch
    tl.store(PartDzXhat + out, tl.sum(acc_dzx, 1), mask=c_ok)
    tl.store(PartDz + out, tl.sum(acc_dz, 1), mask=c_ok)


@lazy_jit()
def _group_norm_bwd_dx_kernel(
    X,  # forward input, (n, c, s) via the stride_x* strides
    dY,  # output gradient, via the stride_d* strides
    dX,  # input gradient out, via the stride_o* strides
    W,  # (C,) weight (unused unless HAS_WEIGHT)
    Bias,  # (C,) bias (unused unless HAS_BIAS)
    Mean,  # (N*G,) fp32 group means
    Rstd,  # (N*G,) fp32 group 1/sqrt(var + eps)
    PartDzXhat,  # (N, NUM_CHUNKS, C) fp32 per-chunk sums of dz * xhat
    PartDz,  # (N, NUM_CHUNKS, C) fp32 per-chunk sums of dz
    stride_xn,  # X sample stride, in elements
    stride_xc,  # X channel stride, in elements
    stride_xs,  # X spatial stride, in elements
    stride_dn,  # dY sample stride, in elements
    stride_dc,  # dY channel stride, in elements
    stride_ds,  # dY spatial stride, in elements
    stride_on,  # dX sample stride, in elements
    stride_oc,  # dX channel stride, in elements
    stride_os,  # dX spatial stride, in elements
    C,  # number of channels
    S,  # spatial size (product of the spatial dims)
    G,  # number of groups
    CPG,  # channels per group
    S_PER_CHUNK,  # spatial positions per chunk
    NUM_CHUNKS,  # chunks per group
    HAS_WEIGHT: tl.constexpr,  # affine weight present
    HAS_BIAS: tl.constexpr,  # affine bias present
    SILU: tl.constexpr,  # the forward applied SiLU
    BLOCK_C: tl.constexpr,  # CPG padded to a power of two
    BLOCK_S: tl.constexpr,  # spatial positions per tile
    BLOCK_CHUNKS: tl.constexpr,  # NUM_CHUNKS padded to a power of two
):
    ng = tl.program_id(0)
    chunk = tl.program_id(1)
    n = ng // G
    g = ng % G
    mean = tl.load(Mean + ng)
    rstd = tl.load(Rstd + ng)
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < CPG
    ch = g * CPG + offs_c
    w = tl.full([BLOCK_C], 1.0, dtype=tl.float32)
    if HAS_WEIGHT:
        w = tl.load(W + ch, mask=c_ok, other=0.0).to(tl.float32)
    b = tl.zeros([BLOCK_C], dtype=tl.float32)
    if HAS_BIAS:
        b = tl.load(Bias + ch, mask=c_ok, other=0.0).to(tl.float32)

    # Group means of w*dz*xhat and w*dz from the per-(chunk, channel) partial sums.
    offs_k = tl.arange(0, BLOCK_CHUNKS)
    part = (n.to(tl.int64) * NUM_CHUNKS + offs_k[:, None]) * C + ch[None, :]
    part_ok = (offs_k < NUM_CHUNKS)[:, None] & c_ok[None, :]
    sum_dzx = tl.sum(tl.load(PartDzXhat + part, mask=part_ok, other=0.0), 0)  # (BLOCK_C,)
    sum_dz = tl.sum(tl.load(PartDz + part, mask=part_ok, other=0.0), 0)
    inv_count = 1.0 / (CPG * S).to(tl.float32)
    c1 = tl.sum(w * sum_dzx, 0) * inv_count
    c2 = tl.sum(w * sum_dz, 0) * inv_count

    x_base = X + n.to(tl.int64) * stride_xn + ch[:, None].to(tl.int64) * stride_xc
    d_base = dY + n.to(tl.int64) * stride_dn + ch[:, None].to(tl.int64) * stride_dc
    o_base = dX + n.to(tl.int64) * stride_on + ch[:, None].to(tl.int64) * stride_oc
    s_start = chunk * S_PER_CHUNK
    s_end = tl.minimum(s_start + S_PER_CHUNK, S)
    for s0 in range(s_start, s_end, BLOCK_S):
        offs = (s0 + tl.arange(0, BLOCK_S)).to(tl.int64)
        ok = c_ok[:, None] & (offs < s_end)[None, :]
        x = tl.load(x_base + offs[None, :] * stride_xs, mask=ok, other=0.0).to(tl.float32)
        dz = tl.load(d_base + offs[None, :] * stride_ds, mask=ok, other=0.0).to(tl.float32)
        xhat = (x - mean) * rstd
        if SILU:
            z = xhat * w[:, None] + b[:, None]
            sig = tl.sigmoid(z)
            dz = dz * sig * (1.0 + z * (1.0 - sig))
        dx = rstd * (dz * w[:, None] - c2 - xhat * c1)
        tl.store(o_base + offs[None, :] * stride_os, dx.to(dX.dtype.element_ty), mask=ok)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _nsc_view(x: torch.Tensor) -> torch.Tensor | None:
    """x as an (N, C, S) view without copying, or None when the spatial axes do not merge."""
    n, c = x.shape[:2]
    s = 1
    for size in x.shape[2:]:
        s *= size
    try:
        return x.view(n, c, s)
    except RuntimeError:
        return None


def _triton_unsupported(x: torch.Tensor, num_groups: int) -> str | None:
    """Why the Triton kernels cannot run this call (None when they can). Inputs already checked."""
    if x.dtype not in _SUPPORTED_DTYPES:
        return f"dtype {x.dtype} is not one of float16, bfloat16, float32"
    if x.numel() == 0:
        return "x is empty"
    cpg = x.shape[1] // num_groups
    if cpg > _MAX_CHANNELS_PER_GROUP:
        return f"{cpg} channels per group exceeds {_MAX_CHANNELS_PER_GROUP}"
    if x.shape[0] * num_groups > 2**31 - 1:
        return "N * num_groups is too large for the grid"
    return None


def _as_nsc(x: torch.Tensor) -> torch.Tensor:
    view = _nsc_view(x)
    return view if view is not None else _nsc_view(x.contiguous())


class _Plan:
    """Tile and chunk sizes for one (N, C, S, G) problem."""

    def __init__(self, x3: torch.Tensor, num_groups: int) -> None:
        n, c, s = x3.shape
        self.cpg = c // num_groups
        self.block_c = _next_pow2(self.cpg)
        interpret = interpret_mode()
        tile = 64 if interpret else 4096
        self.block_s = max(4 if interpret else 16, min(_next_pow2(s), tile // self.block_c))
        tiles = _cdiv(s, self.block_s)
        target_programs = 8 if interpret else 1024
        chunks = max(1, min(_MAX_CHUNKS, tiles, _cdiv(target_programs, n * num_groups)))
        tiles_per_chunk = _cdiv(tiles, chunks)
        self.s_per_chunk = tiles_per_chunk * self.block_s
        self.num_chunks = _cdiv(s, self.s_per_chunk)
        self.block_chunks = max(2, _next_pow2(self.num_chunks))
        self.num_warps = 1 if interpret else (4 if self.block_c * self.block_s <= 2048 else 8)
        self.grid = (n * num_groups, self.num_chunks)


def _group_norm_forward_triton(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    num_groups: int,
    eps: float,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the two forward kernels; returns (y, mean, rstd), mean/rstd fp32 of shape (N, G)."""
    y = new_output(x)
    x3, y3 = _as_nsc(x), _nsc_view(y)
    if y3 is None:  # y could not be laid out like x: compute into a contiguous buffer
        x3 = x3.contiguous()
        y = new_output(x3).view(x.shape)
        y3 = _nsc_view(y)
    n, _, s = x3.shape
    plan = _Plan(x3, num_groups)
    stats = new_output(x3, (3, n * num_groups, plan.num_chunks), torch.float32).unbind(0)
    mean = new_output(x3, (n, num_groups), torch.float32)
    rstd = new_output(x3, (n, num_groups), torch.float32)
    _group_norm_stats_kernel.launch(
        lambda meta: plan.grid,
        x3, *stats,
        *x3.stride(),
        s, num_groups, plan.cpg, plan.s_per_chunk, plan.num_chunks,
        BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, num_warps=plan.num_warps,
    )  # fmt: skip
    _group_norm_apply_kernel.launch(
        lambda meta: plan.grid,
        x3, y3,
        weight if weight is not None else x3,
        bias if bias is not None else x3,
        *stats, mean, rstd,
        *x3.stride(), *y3.stride(),
        s, num_groups, plan.cpg, plan.s_per_chunk, plan.num_chunks, float(eps),
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, SILU=activation == "silu",
        BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, BLOCK_CHUNKS=plan.block_chunks,
        num_warps=plan.num_warps,
    )  # fmt: skip
    return y, mean, rstd


def _group_norm_backward_triton(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    num_groups: int,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the two backward kernels; returns dx and the fp32 (C,) sums dweight, dbias."""
    x3, d3 = _as_nsc(x), _as_nsc(grad_y)
    dx = new_output(x)
    o3 = _nsc_view(dx)
    if o3 is None:
        dx = new_output(x3).view(x.shape)
        o3 = _nsc_view(dx)
    n, c, s = x3.shape
    plan = _Plan(x3, num_groups)
    part_dzx = new_output(x3, (n, plan.num_chunks, c), torch.float32)
    part_dz = new_output(x3, (n, plan.num_chunks, c), torch.float32)
    w_arg = weight if weight is not None else x3
    b_arg = bias if bias is not None else x3
    flags = dict(
        HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None,
        SILU=activation == "silu",
        BLOCK_C=plan.block_c,
        BLOCK_S=plan.block_s,
        num_warps=plan.num_warps,
    )
    _group_norm_bwd_sums_kernel.launch(
        lambda meta: plan.grid,
        x3, d3, w_arg, b_arg, mean, rstd, part_dzx, part_dz,
        *x3.stride(), *d3.stride(),
        c, s, num_groups, plan.cpg, plan.s_per_chunk, plan.num_chunks,
        **flags,
    )  # fmt: skip
    _group_norm_bwd_dx_kernel.launch(
        lambda meta: plan.grid,
        x3, d3, o3, w_arg, b_arg, mean, rstd, part_dzx, part_dz,
        *x3.stride(), *d3.stride(), *o3.stride(),
        c, s, num_groups, plan.cpg, plan.s_per_chunk, plan.num_chunks,
        BLOCK_CHUNKS=plan.block_chunks,
        **flags,
    )  # fmt: skip
    return dx, part_dzx.sum(dim=(0, 1)), part_dz.sum(dim=(0, 1))


# --------------------------------------------------------------------------------------------
# torch.library custom ops (what autograd and torch.compile see)
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("t2i::group_norm", mutates_args=())
def _group_norm_op(
    x: torch.Tensor,
    weight: _MaybeTensor,
    bias: _MaybeTensor,
    num_groups: int,
    eps: float,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton GroupNorm(+SiLU) forward; `activation` is "none" or "silu".
    Returns (y, mean, rstd) with fp32 (N, G) statistics for the backward pass."""
    return _group_norm_forward_triton(x, weight, bias, num_groups, eps, activation)


def _fake_output(x: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(x)
    return y if _nsc_view(y) is not None else torch.empty(x.shape, dtype=x.dtype, device=x.device)


@_group_norm_op.register_fake
def _group_norm_op_fake(x, weight, bias, num_groups, eps, activation):
    stats = x.new_empty((x.shape[0], num_groups), dtype=torch.float32)
    return _fake_output(x), stats, torch.empty_like(stats)


@torch.library.custom_op("t2i::group_norm_backward", mutates_args=())
def _group_norm_backward_op(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: _MaybeTensor,
    bias: _MaybeTensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    num_groups: int,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton GroupNorm(+SiLU) backward: (dx, dweight, dbias); dweight/dbias are fp32 (C,) sums,
    also when the forward had no weight/bias (autograd then drops them)."""
    return _group_norm_backward_triton(grad_y, x, weight, bias, mean, rstd, num_groups, activation)


@_group_norm_backward_op.register_fake
def _group_norm_backward_op_fake(grad_y, x, weight, bias, mean, rstd, num_groups, activation):
    sums = x.new_empty((x.shape[1],), dtype=torch.float32)
    return _fake_output(x), sums, torch.empty_like(sums)


def _group_norm_setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    x, weight, bias, num_groups, _eps, activation = inputs
    _y, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the statistics
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.num_groups, ctx.activation = num_groups, activation


def _group_norm_gradients(ctx: Any, grad_y: torch.Tensor, backward: Any) -> tuple:
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dw, db = backward(grad_y, x, weight, bias, mean, rstd, ctx.num_groups, ctx.activation)
    dw = None if weight is None else dw.to(weight.dtype)
    db = None if bias is None else db.to(bias.dtype)
    return dx, dw, db, None, None, None


def _group_norm_autograd_backward(ctx: Any, grad_y: torch.Tensor, _gm: Any, _gr: Any) -> tuple:
    return _group_norm_gradients(ctx, grad_y, _group_norm_backward_op)


_group_norm_op.register_autograd(
    _group_norm_autograd_backward, setup_context=_group_norm_setup_context
)


class _GroupNormFunction(torch.autograd.Function):
    """Eager autograd of the Triton path: the custom op's launchers and context, without the
    custom-op dispatcher's host cost (see `lazy_triton.call_path`)."""

    # The ctx-first forward: a separate `setup_context` makes `Function.apply` bind its
    # arguments with `inspect.signature` on every call.
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps, activation):
        inputs = (x, weight, bias, num_groups, eps, activation)
        output = _group_norm_forward_triton(*inputs)
        _group_norm_setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, grad_y, _gm, _gr):
        return _group_norm_gradients(ctx, grad_y, _group_norm_backward_triton)


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------


def group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    *,
    activation: str | None = None,
) -> torch.Tensor:
    """GroupNorm with optional fused SiLU; Triton on CUDA where supported, else `group_norm_ref`.

    Args:
        x: (N, C, *spatial) input, fp16/bf16/fp32, contiguous or channels-last.
        num_groups: number of groups G; must divide C.
        weight: optional (C,) per-channel scale.
        bias: optional (C,) per-channel shift.
        eps: added to the variance.
        activation: None or "silu" (applied after the affine).

    Returns:
        Tensor shaped and typed like x, in x's memory format (fp32 statistics inside).

    Raises:
        ValueError: bad shapes, group count or activation.
        KernelUnsupportedError: `triton` was forced for a call the kernels cannot run.
    """
    _check_inputs(x, num_groups, weight, bias, activation)
    tensors = [t for t in (x, weight, bias) if t is not None]
    backend = choose_backend(
        "group_norm",
        tensors,
        lambda: _triton_unsupported(x, num_groups),
        lambda: _eager_unprofitable(x),
    )
    if backend == "ref":
        return group_norm_ref(x, num_groups, weight, bias, eps, activation=activation)
    args = (x, weight, bias, num_groups, float(eps), activation or "none")
    y, _, _ = run_triton(
        _group_norm_op, _GroupNormFunction, _group_norm_forward_triton, args, (x, weight, bias)
    )
    return y
