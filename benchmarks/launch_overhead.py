"""Host-side cost of one call of the t2i kernels, split into its parts (CUDA GPU needed).

At the small Stable Diffusion UNet shapes the GPU finishes a GroupNorm or attention kernel in
5-20 us, so an eager call costs whatever the host spends getting it launched. This script
times, per call, on a tiny problem where the GPU is never the bottleneck (wall time of N calls
divided by N, one synchronisation at the end):

* the PyTorch baselines (`F.silu(F.group_norm(...))`, `F.scaled_dot_product_attention`);
* our public ops and each layer under them: backend choice, input checks, launcher (plan +
  allocations + launches), one `LazyKernel.launch`, the bare `JITFunction[grid](...)` and the
  compiled kernel's own runner, plus an empty one-argument Triton kernel (Triton's floor);
* the backward of each op through autograd;

then profiles (cProfile) a loop of each public op and lists the functions with the most own
time. Writes `launch_overhead.md` to `--out` (default `$OUT`).

Usage: `python benchmarks/launch_overhead.py [--out DIR] [--calls N]`.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import os
import pstats
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import t2i_kernels
from t2i_kernels.dispatch import choose_backend
from t2i_kernels.lazy_triton import lazy_jit

# `t2i_kernels.attention` / `.group_norm` are the public functions; these are their modules.
attention_mod = importlib.import_module("t2i_kernels.attention")
group_norm_mod = importlib.import_module("t2i_kernels.group_norm")
tl = None


@lazy_jit()
def _empty_kernel(X):
    pass


def _per_call_us(fn: Callable[[], object], calls: int) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def _profile(fn: Callable[[], object], calls: int, top: int = 18) -> str:
    fn()
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def group_norm_parts(calls: int) -> tuple[list[tuple[str, Callable[[], object]]], Callable]:
    x = torch.randn(2, 1280, 16, 16, device="cuda", dtype=torch.float16)
    w = torch.randn(1280, device="cuda", dtype=torch.float16)
    b = torch.randn(1280, device="cuda", dtype=torch.float16)
    x3 = x.view(2, 1280, 256)
    plan = group_norm_mod._Plan(x3, 32)
    stats = torch.empty(3, 64, plan.num_chunks, device="cuda").unbind(0)

    def public():
        with t2i_kernels.use_kernels("triton"):
            return t2i_kernels.group_norm(x, 32, w, b, activation="silu")

    def choose():
        with t2i_kernels.use_kernels("triton"):
            return choose_backend(
                "group_norm",
                [x, w, b],
                lambda: group_norm_mod._triton_unsupported(x, 32),
                lambda: group_norm_mod._eager_unprofitable(x),
            )

    def launch_stats():
        return group_norm_mod._group_norm_stats_kernel.launch(
            lambda meta: plan.grid,
            x3, *stats, *x3.stride(), 256, 32, plan.cpg, plan.s_per_chunk, plan.num_chunks,
            BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, num_warps=plan.num_warps,
        )  # fmt: skip

    compiled = launch_stats()
    jitted = group_norm_mod._group_norm_stats_kernel._jitted()
    all_args = (
        x3, *stats, *x3.stride(), 256, 32, plan.cpg, plan.s_per_chunk, plan.num_chunks,
        plan.block_c, plan.block_s,
    )  # fmt: skip

    def jit_direct():
        return jitted[plan.grid](
            x3, *stats, *x3.stride(), 256, 32, plan.cpg, plan.s_per_chunk, plan.num_chunks,
            BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, num_warps=plan.num_warps,
        )  # fmt: skip

    runner = compiled[(*plan.grid, 1)]  # a compiled kernel takes a 3-D grid
    parts = [
        ("torch F.silu(F.group_norm) 2x1280x16x16", lambda: F.silu(F.group_norm(x, 32, w, b))),
        ("t2i group_norm (public, triton)", public),
        ("  choose_backend", choose),
        ("  _check_inputs", lambda: group_norm_mod._check_inputs(x, 32, w, b, "silu")),
        ("  _Plan", lambda: group_norm_mod._Plan(x3, 32)),
        (
            "  _group_norm_forward_triton (plan + 4 allocs + 2 launches)",
            lambda: group_norm_mod._group_norm_forward_triton(x, w, b, 32, 1e-5, "silu"),
        ),
        ("  one LazyKernel.launch (stats kernel)", launch_stats),
        ("  JITFunction[grid](...) (stats kernel)", jit_direct),
        ("  CompiledKernel[grid](...) (stats kernel)", lambda: runner(*all_args)),
        ("  torch.empty((2, 1280, 256))", lambda: torch.empty_like(x3)),
    ]
    return parts, public


def attention_parts() -> tuple[list[tuple[str, Callable[[], object]]], Callable, Callable]:
    q, k, v = (
        torch.randn(2, 8, 256, 160, device="cuda", dtype=torch.float16, requires_grad=True)
        for _ in range(3)
    )
    scale = 160**-0.5

    def public():
        with t2i_kernels.use_kernels("triton"), torch.no_grad():
            return t2i_kernels.attention(q, k, v)

    out = None
    grad = torch.randn(2, 8, 256, 160, device="cuda", dtype=torch.float16)

    def ours_bwd():
        nonlocal out
        with t2i_kernels.use_kernels("triton"):
            out = t2i_kernels.attention(q, k, v)
        return torch.autograd.grad(out, (q, k, v), grad)

    def torch_bwd():
        out = F.scaled_dot_product_attention(q, k, v)
        return torch.autograd.grad(out, (q, k, v), grad)

    with torch.no_grad():
        o, lse = attention_mod._attention_forward_triton(q, k, v, None, False, scale)

    def bwd_launcher():
        return attention_mod._attention_backward_triton(grad, q, k, v, o, lse, None, False, scale)

    def fwd_sdpa():
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v)

    def fwd_launcher():
        with torch.no_grad():
            return attention_mod._attention_forward_triton(q, k, v, None, False, scale)

    def fwd_autograd():
        with t2i_kernels.use_kernels("triton"):
            return t2i_kernels.attention(q, k, v)

    with t2i_kernels.use_kernels("triton"):
        kept = t2i_kernels.attention(q, k, v)
    kept_torch = F.scaled_dot_product_attention(q, k, v)

    parts = [
        ("torch SDPA fwd 2x8x256x256 d160", fwd_sdpa),
        (
            "torch SDPA bwd only (autograd.grad, graph kept)",
            lambda: torch.autograd.grad(kept_torch, (q, k, v), grad, retain_graph=True),
        ),
        ("t2i attention fwd recording autograd (Function.apply)", fwd_autograd),
        (
            "t2i attention bwd only (autograd.grad, graph kept)",
            lambda: torch.autograd.grad(kept, (q, k, v), grad, retain_graph=True),
        ),
        ("t2i attention fwd (public, triton)", public),
        ("  _attention_forward_triton (1 launch)", fwd_launcher),
        ("torch SDPA fwd+bwd (autograd)", torch_bwd),
        ("t2i attention fwd+bwd (autograd, triton)", ours_bwd),
        ("  _attention_backward_triton (4 allocs + 3 launches)", bwd_launcher),
    ]
    return parts, public, ours_bwd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/launch_overhead.py needs a CUDA GPU")
    empty = torch.empty(1, device="cuda")
    parts, gn_public = group_norm_parts(args.calls)
    attn, attn_public, attn_bwd = attention_parts()
    parts = [
        *parts,
        ("Triton floor: empty 1-arg kernel, LazyKernel.launch",
         lambda: _empty_kernel.launch(lambda m: (1,), empty)),
        *attn,
    ]  # fmt: skip
    lines = [
        f"Host time per call, us ({args.calls} calls, one sync; {torch.cuda.get_device_name()}, "
        f"torch {torch.__version__})",
        "",
        "| call | us |",
        "| --- | ---: |",
    ]
    for name, fn in parts:
        try:
            lines.append(f"| {name} | {_per_call_us(fn, args.calls):.1f} |")
        except Exception as err:  # one broken row must not lose the rest
            lines.append(f"| {name} | error: {type(err).__name__}: {str(err)[:100]} |")
        print(lines[-1], flush=True)
    # The backward runs on autograd's device thread, out of the main thread's profiler's
    # sight: profile it from inside.
    worker = cProfile.Profile()
    launcher = attention_mod._attention_backward_triton

    def profiled_launcher(*a):
        worker.enable()
        try:
            return launcher(*a)
        finally:
            worker.disable()

    attention_mod._attention_backward_triton = profiled_launcher
    try:
        attn_bwd()
        worker = cProfile.Profile()
        for _ in range(300):
            attn_bwd()
        torch.cuda.synchronize()
    finally:
        attention_mod._attention_backward_triton = launcher
    buf = io.StringIO()
    pstats.Stats(worker, stream=buf).sort_stats("tottime").print_stats(18)
    lines += ["", "cProfile inside the backward (autograd thread), 300 calls:", "```"]
    lines += [buf.getvalue(), "```"]
    for name, fn in [
        ("group_norm (triton)", gn_public),
        ("attention fwd", attn_public),
        ("attention fwd+bwd", attn_bwd),
    ]:
        lines += ["", f"cProfile, {name}, 300 calls:", "```", _profile(fn, 300), "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "launch_overhead.md"), "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
