"""FP8's error on an SD-family recipe (issue 18, the fast path's FP8 option).

Builds the recipe plain and with ``fp8=True`` (:meth:`t2i.Pipeline.quantize_fp8`) and calls
both UNets on the same random latents (N(0, 1), the scale of a noised SD latent), timesteps
spread over [0, 1000) and the recipe's own text conditioning of shapes prompts; reports the
relative error ``||fp8 - plain|| / ||plain||`` of the UNet output overall, per sample (mean,
max) and per timestep bucket, and how many layers were converted. With ``--judge`` it also
runs the shapes judge (:func:`t2i.shapes.evaluate.evaluate`, what ``t2i eval`` runs) with FP8
off and on over the same prompts and seeds: alignment (overall / single / pair), Fréchet
distance and the image error. Nothing is asserted.

    OMP_NUM_THREADS=1 python benchmarks/fp8_error.py \\
        --out benchmarks/results/fp8_error_cpu_2026-12-03.json
    python benchmarks/fp8_error.py --device cuda --dtype bfloat16 --judge --prompts 256 \\
        --seeds 4 --out benchmarks/results/fp8_error_h200_DATE.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def components(pipe: Any) -> dict[str, Any]:
    """The pipeline's loaded components by kind (the first of each)."""
    found: dict[str, Any] = {}

    def keep(node_id: str, kind: str, component: Any) -> Any:
        found.setdefault(kind, component)
        return component

    pipe.map_components(keep)
    return found


def unet_of(denoiser: Any) -> torch.nn.Module:
    """The UNet an ldm denoiser holds (``model.unet``)."""
    from t2i.engine import held_modules

    for path, module in held_modules(denoiser).items():
        if path.split(".")[-1] == "unet":
            return module
    raise SystemExit(f"{type(denoiser).__name__} holds no UNet: this benchmark reads ldm recipes")


def contexts(pipe: Any, n: int) -> torch.Tensor:
    """``(n, T, D)`` text states of the first ``n`` shapes prompts, from the recipe's encoder."""
    from t2i.shapes.evaluate import prompt_set

    found = components(pipe)
    texts = [p.text for p in prompt_set(n)]
    with torch.inference_mode():
        cond = found["text_encoder"](found["tokenizer"](texts))
    return cond.embeds


def unet_error(plain: Any, fp8: Any, args: argparse.Namespace) -> dict:
    """The relative error of the FP8 UNet's output against the plain one on random inputs."""
    a, b = unet_of(components(plain)["denoiser"]), unet_of(components(fp8)["denoiser"])
    cfg = a.config
    gen = torch.Generator().manual_seed(args.seed)
    n, side = args.samples, args.latent_size
    x = torch.randn(n, cfg.in_channels, side, side, generator=gen)
    t = (torch.arange(n, dtype=torch.float32) + torch.rand(n, generator=gen)) * (1000 / n)
    context = contexts(plain, n)
    outs: dict[str, list[torch.Tensor]] = {"plain": [], "fp8": []}
    seconds = {"plain": 0.0, "fp8": 0.0}
    with torch.inference_mode():
        for i in range(0, n, args.batch):
            sl = slice(i, i + args.batch)
            inputs = [v[sl].to(plain.device, a.dtype) for v in (x, t, context)]
            for name, unet in (("plain", a), ("fp8", b)):
                start = time.perf_counter()
                outs[name].append(unet(*inputs).double().cpu())
                seconds[name] += time.perf_counter() - start
    ref, out = torch.cat(outs["plain"]), torch.cat(outs["fp8"])
    per = ((out - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).tolist()
    buckets = {f"t{int(lo)}-{int(lo) + 250}": [] for lo in range(0, 1000, 250)}
    for tt, err in zip(t.tolist(), per):
        buckets[f"t{int(tt // 250) * 250}-{int(tt // 250) * 250 + 250}"].append(err)
    return {
        "relative_error": float((out - ref).norm() / ref.norm()),
        "relative_error_per_sample_mean": float(np.mean(per)),
        "relative_error_per_sample_max": float(np.max(per)),
        "relative_error_by_timestep": {k: float(np.mean(v)) for k, v in buckets.items() if v},
        "samples": n,
        "latent_size": side,
        "seconds_per_batch": {k: v / -(-n // args.batch) for k, v in seconds.items()},
    }


def judge_rows(plain: Any, fp8: Any, args: argparse.Namespace) -> list[dict]:
    """The shapes judge with FP8 off and on (same prompts and seeds), and the image error."""
    from t2i.shapes.evaluate import evaluate, prompt_set
    from t2i.shapes.judge import load_judge

    prompts, seeds, judge = prompt_set(args.prompts), list(range(args.seeds)), load_judge()
    request = {"steps": args.steps} if args.steps else {}
    rows, pixels = [], {}
    for name, pipe in (("off", plain), ("on", fp8)):
        px: list[np.ndarray] = []

        def generate(prompt: str, batch: list[int], pipe=pipe, px=px):
            images = list(pipe(prompt, seed=batch[0], batch_size=len(batch), **request).images)
            px.extend(np.asarray(im.convert("RGB"), dtype=np.float64) / 255 for im in images)
            return images

        start = time.perf_counter()
        report, _ = evaluate(
            generate, prompts, seeds, judge=judge, progress=False, keep_images=False
        )
        seconds = time.perf_counter() - start
        pixels[name] = np.stack(px)
        rows.append(
            {
                "fp8": name,
                "alignment": report.alignment,
                "frechet_distance": report.frechet_distance,
                "seconds_per_image": seconds / report.n_images,
                "n_images": report.n_images,
            }
        )
    diff = pixels["on"] - pixels["off"]
    rows[1]["image_relative_error_vs_off"] = float(
        np.linalg.norm(diff) / np.linalg.norm(pixels["off"])
    )
    rows[1]["image_mean_abs_diff_vs_off_255"] = float(np.abs(diff).mean() * 255)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="ldm-shapes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")
    parser.add_argument("--samples", type=int, default=32, help="random latents for the UNet")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--latent-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-features", type=int, default=None, help="t2i.fp8 default: 64")
    parser.add_argument("--judge", action="store_true", help="also the shapes judge, off vs on")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (recipe default)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from t2i import Engine

    build = {"device": args.device, "dtype": args.dtype}
    plain = Engine.build(args.recipe, **build)
    fp8 = Engine.build(args.recipe, **build)
    layers = fp8.quantize_fp8(min_features=args.min_features)
    if args.latent_size is None:  # the recipe's default image size over the VAE's factor
        side = plain("a red cube", seed=0, steps=1).images[0].size[0]
        args.latent_size = side // components(plain)["decoder"].vae.config.factor
    result = {
        "benchmark": "fp8_error",
        "recipe": args.recipe,
        "device": args.device,
        "dtype": args.dtype or "float32",
        "fp8_layers": len(layers),
        "linear_layers": sum(
            isinstance(m, torch.nn.Linear) for m in unet_of(components(plain)["denoiser"]).modules()
        ),
        "min_features": args.min_features or 64,
        "unet": unet_error(plain, fp8, args),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "note": "relative_error = ||fp8 - plain|| / ||plain|| of the UNet output (eps) on "
        "N(0,1) latents, timesteps spread over [0, 1000), the recipe's text states of shapes "
        "prompts; weights per output row and activations per row in E4M3",
    }
    if args.judge:
        result["judge"] = judge_rows(plain, fp8, args)
        result.update(prompts=args.prompts, seeds=args.seeds, steps=args.steps or "recipe")
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
