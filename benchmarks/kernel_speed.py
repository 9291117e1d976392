"""Benchmark t2i_kernels (Triton) against PyTorch at Stable Diffusion shapes, on one CUDA GPU.

Compares, in one run and on the same card:
* `t2i_kernels.attention` vs `F.scaled_dot_product_attention` (SD1.5 UNet self-attention at
  64x64 / 32x32 / 16x16 latents: batch 2, 8 heads, seq 4096 / 1024 / 256, head dim 40 / 80 / 160;
  head dims 64 and 128 at seq 4096; cross-attention to 77 tokens);
* `t2i_kernels.group_norm(..., activation="silu")` vs `F.silu(F.group_norm(...))` (UNet shapes
  2x320x64x64, 2x640x32x32, 2x1280x16x16 and VAE-decoder shapes at 512x512 output,
  2x128x512x512, 2x256x256x256, 2x512x128x128; 32 groups),
forward and backward, fp16. Times are medians from `triton.testing.do_bench` (CUDA events, L2
flushed between runs); forward rows also give a CUDA-graph replay time (`do_bench_cudagraph`),
which removes Python launch overhead. Prints a markdown table and writes it to
`$OUT/kernels.md` (or `--out`).

Usage (on the GPU machine): `python benchmarks/kernel_speed.py [--out DIR] [--quick]`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import subprocess
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

import t2i_kernels
from t2i_kernels.lazy_triton import LazyKernel


def _bench(fn: Callable[[], object], graph: bool = False) -> float:
    from triton.testing import do_bench, do_bench_cudagraph

    fn()  # compile / autotune outside the timing
    torch.cuda.synchronize()
    if graph:
        try:
            return float(do_bench_cudagraph(fn, rep=100))
        except Exception as err:  # capture can fail for reasons unrelated to the kernels
            print(f"  cudagraph timing failed: {type(err).__name__}: {err}", file=sys.stderr)
            return float("nan")
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _row(name: str, pass_: str, torch_ms: float, triton_ms: float, target: str) -> str:
    ratio = torch_ms / triton_ms if triton_ms > 0 else float("nan")
    return f"| {name} | {pass_} | {torch_ms:.4f} | {triton_ms:.4f} | {ratio:.2f}x | {target} |"


def _compare(
    name: str,
    torch_fn: Callable[[], torch.Tensor],
    our_fn: Callable[[], torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    fwd_target: str,
) -> list[str]:
    """Rows for forward (events), forward (CUDA graph) and backward of PyTorch vs Triton."""
    try:
        return _compare_passes(name, torch_fn, our_fn, inputs, fwd_target)
    except Exception as err:  # keep the rest of the table when one shape fails
        print(f"{name}: {type(err).__name__}: {err}", file=sys.stderr)
        return [f"| {name} | error | | | | {type(err).__name__}: {str(err)[:80]} |"]


def _compare_passes(
    name: str,
    torch_fn: Callable[[], torch.Tensor],
    our_fn: Callable[[], torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    fwd_target: str,
) -> list[str]:
    def ours() -> torch.Tensor:
        with t2i_kernels.use_kernels("triton"):
            return our_fn()

    rows = []
    # Backward is timed with events only: capturing autograd in a CUDA graph fails (and leaves
    # the CUDA RNG unusable), so "bwd" includes launch overhead for the small shapes.
    for pass_ in ("fwd", "fwd (graph)", "bwd"):
        times = []
        for fn in (torch_fn, ours):
            if pass_.startswith("bwd"):
                out = fn()
                grad = torch.randn_like(out)
                times.append(
                    _bench(lambda out=out, g=grad: torch.autograd.grad(out, inputs, g, True))
                )
            else:
                with torch.no_grad():
                    times.append(_bench(fn, graph=pass_ == "fwd (graph)"))
        target = fwd_target if pass_ == "fwd" else (">= 0.7x" if pass_ == "bwd" else "")
        rows.append(_row(name, pass_, times[0], times[1], target))
    return rows


def bench_attention(quick: bool, only: list[str] | None = None) -> list[str]:
    shapes = [
        # (label, B, H, Sq, Sk, D, forward target)
        ("self 64x64 lat. s4096 d40", 2, 8, 4096, 4096, 40, ">= 1.0x"),
        ("self 32x32 lat. s1024 d80", 2, 8, 1024, 1024, 80, ""),
        ("self 16x16 lat. s256 d160", 2, 8, 256, 256, 160, ""),
        ("self s4096 d64", 2, 8, 4096, 4096, 64, ">= 0.85x"),
        ("self s4096 d128", 2, 8, 4096, 4096, 128, ">= 0.85x"),
        ("cross s4096 k77 d40", 2, 8, 4096, 77, 40, ""),
        ("cross s256 k77 d160", 2, 8, 256, 77, 160, ""),
    ]
    if quick:
        shapes = shapes[:1]
    if only is not None:
        shapes = [s for s in shapes if any(part in f"attention {s[0]}" for part in only)]
    rows = []
    for label, b, h, sq, sk, d, target in shapes:
        print(f"attention {label}", file=sys.stderr, flush=True)
        q = torch.randn(b, h, sq, d, device="cuda", dtype=torch.float16, requires_grad=True)
        k = torch.randn(b, h, sk, d, device="cuda", dtype=torch.float16, requires_grad=True)
        v = torch.randn(b, h, sk, d, device="cuda", dtype=torch.float16, requires_grad=True)
        new = _compare(
            f"attention {label}",
            lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v),
            lambda q=q, k=k, v=v: t2i_kernels.attention(q, k, v),
            (q, k, v),
            target,
        )
        rows += new
        print("\n".join(new), file=sys.stderr, flush=True)  # kept if the run is cut short
    return rows


def bench_group_norm(quick: bool) -> list[str]:
    shapes = [
        ("UNet 2x320x64x64", (2, 320, 64, 64), ">= 2x"),
        ("UNet 2x640x32x32", (2, 640, 32, 32), ">= 2x"),
        ("UNet 2x1280x16x16", (2, 1280, 16, 16), ">= 2x"),
        ("VAE 2x128x512x512", (2, 128, 512, 512), ">= 4x"),
        ("VAE 2x256x256x256", (2, 256, 256, 256), ""),
        ("VAE 2x512x128x128", (2, 512, 128, 128), ""),
    ]
    if quick:
        shapes = shapes[3:4]
    rows = []
    for label, shape, target in shapes:
        print(f"group_norm {label}", file=sys.stderr, flush=True)
        c = shape[1]
        x = torch.randn(shape, device="cuda", dtype=torch.float16, requires_grad=True)
        w = torch.randn(c, device="cuda", dtype=torch.float16, requires_grad=True)
        b = torch.randn(c, device="cuda", dtype=torch.float16, requires_grad=True)
        rows += _compare(
            f"group_norm+silu {label}",
            lambda x=x, w=w, b=b: F.silu(F.group_norm(x, 32, w, b, 1e-5)),
            lambda x=x, w=w, b=b: t2i_kernels.group_norm(x, 32, w, b, 1e-5, activation="silu"),
            (x, w, b),
            target,
        )
    return rows


def profile_kernels(quick: bool) -> list[str]:
    """Per-kernel GPU time (torch.profiler, mean over 20 calls) for every op and shape."""
    from torch.profiler import ProfilerActivity, profile

    cases: list[tuple[str, Callable[[], torch.Tensor], tuple[torch.Tensor, ...]]] = []
    gn_shapes = [(2, 320, 64, 64), (2, 1280, 16, 16), (2, 128, 512, 512), (2, 256, 256, 256)]
    for shape in gn_shapes[2:3] if quick else gn_shapes:
        x = torch.randn(shape, device="cuda", dtype=torch.float16, requires_grad=True)
        w = torch.randn(shape[1], device="cuda", dtype=torch.float16, requires_grad=True)
        cases.append(
            (f"torch gn {shape}", lambda x=x, w=w: F.silu(F.group_norm(x, 32, w, w)), (x, w))
        )
        cases.append(
            (
                f"t2i gn {shape}",
                lambda x=x, w=w: t2i_kernels.group_norm(x, 32, w, w, activation="silu"),
                (x, w),
            )
        )
    for sq, sk, d in [(4096, 4096, 40), (4096, 4096, 64), (4096, 4096, 128)][: 1 if quick else 3]:
        q = torch.randn(2, 8, sq, d, device="cuda", dtype=torch.float16, requires_grad=True)
        k = torch.randn(2, 8, sk, d, device="cuda", dtype=torch.float16, requires_grad=True)
        cases.append(
            (
                f"sdpa {sq}x{sk} d{d}",
                lambda q=q, k=k: F.scaled_dot_product_attention(q, k, k),
                (q, k),
            )
        )
        cases.append(
            (f"t2i attn {sq}x{sk} d{d}", lambda q=q, k=k: t2i_kernels.attention(q, k, k), (q, k))
        )
    lines = ["", "Per-kernel GPU time (us, mean of 20 calls, torch.profiler):"]
    iters = 20
    for name, fn, inputs in cases:
        with t2i_kernels.use_kernels("triton"):
            out = fn()
            grad = torch.randn_like(out)
            torch.autograd.grad(out, inputs, grad, retain_graph=True)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(iters):
                    with torch.no_grad():
                        fn()
                for _ in range(iters):
                    torch.autograd.grad(out, inputs, grad, retain_graph=True)
                torch.cuda.synchronize()
        for event in prof.key_averages():
            dev = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
            if dev > 0 and event.count >= iters:
                lines.append(
                    f"- {name}: `{event.key[:70]}` x{event.count // iters}: {dev / iters:.1f}"
                )
    return lines


def _tuned_configs() -> list[str]:
    """The autotuner's choices, for the record."""
    attention_mod = importlib.import_module("t2i_kernels.attention")
    lines = []
    for name in dir(attention_mod):
        kernel = getattr(attention_mod, name)
        if not isinstance(kernel, LazyKernel):
            continue
        for tuner in kernel._tuned.values():
            for key, cfg in getattr(tuner, "cache", {}).items():
                lines.append(f"- `{name}` key {key}: {cfg}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for kernels.md")
    parser.add_argument("--quick", action="store_true", help="one shape per op")
    parser.add_argument("--profile", action="store_true", help="add per-kernel GPU times")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated parts of row names to run (e.g. 's4096 d128,s4096 d64'); "
        "attention rows only, no GroupNorm",
    )
    args = parser.parse_args()
    only = args.only.split(",") if args.only else None
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/kernel_speed.py needs a CUDA GPU")
    import triton

    try:
        card = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        card = torch.cuda.get_device_name()
    header = [
        f"Card: {card}; torch {torch.__version__}; triton {triton.__version__}; "
        f"date {datetime.date.today().isoformat()}; fp16; times in ms (median).",
        "",
        "| op / shape | pass | PyTorch ms | t2i Triton ms | speedup | target |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    gn_rows = bench_group_norm(args.quick) if only is None else []
    rows = gn_rows + bench_attention(args.quick, only)
    tuned = _tuned_configs()
    prof = profile_kernels(args.quick) if args.profile else []
    text = "\n".join([*header, *rows, "", "Autotuned attention configs:", *tuned, *prof]) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "kernels.md"), "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = False
    main()
