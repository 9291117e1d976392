"""ONNX Runtime vs torch: per-step UNet (batch 2) and full txt2img, one recipe.

1. ``unet_step``: the recipe denoiser's exported ``unet`` module on a batch of 2 at the
   recipe's default size (a CFG step's batch: cond + uncond), torch eager vs the ORT session
   (CPUExecutionProvider, or CUDAExecutionProvider with I/O binding on ``--device cuda``).
   Median of ``--repeats`` after ``--warmup`` calls.
2. ``txt2img``: the whole request (``--steps`` steps, the recipe's default sampler, CFG),
   ``Engine.build(recipe)`` vs ``Engine.build(runtime="onnx", onnx_dir=...)``, median of
   ``--repeats`` after one warm-up; the image difference (max over pixels, 0..255) is reported.

The export is made in ``--export-dir`` (default: a temporary folder) unless it exists.
Any recipe with an export works (every family's default): a recipe whose denoiser exports no
``unet`` (Imagen's stages, the GAN generator, DALL-E's transformer) gets the ``txt2img`` part
only; ``--checkpoint`` passes ``checkpoint=`` to both builds and the export.

Usage::

    python benchmarks/onnx_speed.py --device cpu --out onnx_speed_cpu.json
    python benchmarks/onnx_speed.py --device cuda --out onnx_speed_gpu.json   # onnxruntime-gpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _median_seconds(fn, repeats: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _unet_inputs(pipe, device) -> tuple:
    from t2i_onnx.exporter import loaded_components

    for c in loaded_components(pipe):
        if c.kind == "denoiser":
            return {e.name: e for e in c.component.export_spec()}.get("unet")
    return None


def unet_step(pipe, onnx_pipe, args, sync) -> dict | None:
    from t2i_onnx.runtime import OrtModule

    m = _unet_inputs(pipe, args.device)
    if m is None or len(m.example_inputs) != 3:
        return None  # no SD-style (sample, timestep, context) UNet: txt2img only
    side = pipe.defaults.get("width", 64) // _latent_factor(pipe)
    sample, timestep, context = m.example_inputs
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn((2, sample.shape[1], side, side), generator=gen)
    context = torch.randn((2, *context.shape[1:]), generator=gen)
    inputs = tuple(t.to(args.device) for t in (sample, timestep[:2], context))
    module = m.module.to(args.device)
    sessions = [c for c in _components(onnx_pipe) if isinstance(c, OrtModule)]
    ort_unet = next(s for s in sessions if "encoder_hidden_states" in s.input_names)
    with torch.no_grad():
        t_torch = _median_seconds(lambda: module(*inputs), args.repeats, args.warmup, sync)
        t_ort = _median_seconds(lambda: ort_unet(*inputs), args.repeats, args.warmup, sync)
        error = float((module(*inputs) - ort_unet(*inputs)).abs().max())
    return {
        "shape": list(inputs[0].shape),
        "torch_ms": round(1000 * t_torch, 3),
        "ort_ms": round(1000 * t_ort, 3),
        "speedup": round(t_torch / t_ort, 3),
        "max_abs_error": error,
    }


def _latent_factor(pipe) -> int:
    from t2i_onnx.exporter import loaded_components

    for c in loaded_components(pipe):
        if c.kind == "decoder":
            return int(getattr(c.component, "factor", 8))
    return 8


def _components(pipe) -> list:
    from t2i_onnx.exporter import loaded_components
    from t2i_onnx.runtime import _references

    found = []
    for c in loaded_components(pipe):
        found += [c.component, *_references(c.component)]
    return found


def txt2img(pipe, onnx_pipe, args, sync) -> dict:
    fields = {"seed": 7, "steps": args.steps}
    prompt = "a large red circle on the left"
    seeds = iter(range(100, 10_000))  # a new seed per call: no cached sample is reused

    if pipe.defaults.get("steps") == 1 or pipe.recipe.graph.meta.get("kind") != "diffusion":
        fields.pop("steps")  # one pass (GAN) or one token per position (DALL-E): no steps

    rest = {k: v for k, v in fields.items() if k != "seed"}

    def run(p):
        return lambda: p(prompt, seed=next(seeds), **rest)

    t_torch = _median_seconds(run(pipe), args.repeats_full, 1, sync)
    t_ort = _median_seconds(run(onnx_pipe), args.repeats_full, 1, sync)
    a = np.asarray(pipe(prompt, **fields).images[0], dtype=int)
    b = np.asarray(onnx_pipe(prompt, **fields).images[0], dtype=int)
    return {
        "steps": fields.get("steps"),
        "sampler": pipe.defaults.get("sampler"),
        "torch_s": round(t_torch, 4),
        "ort_s": round(t_ort, 4),
        "speedup": round(t_torch / t_ort, 3),
        "max_pixel_difference": int(np.abs(a - b).max()),
        "onnx_torch_fallback": onnx_pipe.onnx_torch_fallback,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="ldm-shapes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--export-dir", default=None)
    p.add_argument("--checkpoint", default=None, help="checkpoint= of the recipe (both builds)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats-full", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch and ORT intra-op threads")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from t2i_onnx.exporter import export_recipe

    from t2i.engine import Engine

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.export_dir or tempfile.mkdtemp()) / args.recipe
    options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    if not folder.exists():
        export_recipe(args.recipe, folder, options=options, progress=print)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    pipe = Engine.build(args.recipe, device=args.device, **options)
    onnx_pipe = Engine.build(
        runtime="onnx", onnx_dir=folder, onnx_threads=args.threads, device=args.device
    )
    import onnxruntime

    record = {
        "recipe": args.recipe,
        "device": args.device,
        "providers": onnx_pipe.onnx_providers,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
        "unet_step_batch2": unet_step(pipe, onnx_pipe, args, sync),
        "txt2img": txt2img(pipe, onnx_pipe, args, sync),
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
