"""DeepCache's quality cost on the embedded ``ldm-shapes`` model (issue 18, item 3).

Runs the shapes judge (:func:`t2i.shapes.evaluate.evaluate`) on the same prompts and seeds
with DeepCache off (interval 1) and at each other ``--intervals`` value
(``Engine.build("ldm-shapes", deepcache=N)``), and reports per setting: alignment
(overall / single / pair), the Fréchet distance in the judge's features, the relative error
of the final images against DeepCache off (``||a - b|| / ||b||`` over all pixels in [0, 1],
and the mean absolute difference in 1/255), wall time per image, and UNet calls (full ones,
which run the middle block, and cached ones) per image. Nothing is asserted.

    OMP_NUM_THREADS=1 python benchmarks/deepcache_shapes.py --prompts 32 --seeds 2 \\
        --out benchmarks/results/deepcache_shapes_cpu_2026-12-03.json
    python benchmarks/deepcache_shapes.py --device cuda --prompts 256 --seeds 4 --out ...
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


def _unet(pipe: Any) -> Any:
    """The pipeline's loaded denoiser (its UNet and DeepCache state)."""
    found: list[Any] = []

    def keep(node_id: str, kind: str, component: Any) -> Any:
        if kind == "denoiser":
            found.append(component)
        return component

    pipe.map_components(keep)
    return found[0]


def run_setting(interval: int, args: argparse.Namespace, prompts, seeds, judge) -> dict:
    """Generate and judge every prompt x seed at one DeepCache interval (1: off)."""
    from t2i import Engine
    from t2i.shapes.evaluate import evaluate

    options = {} if interval == 1 else {"deepcache": interval}
    if args.branch is not None and interval != 1:
        options["deepcache_branch"] = args.branch
    pipe = Engine.build("ldm-shapes", device=args.device, **options)
    denoiser = _unet(pipe)
    calls = {"unet": 0, "middle": 0}
    denoiser.unet.register_forward_pre_hook(lambda *_: calls.__setitem__("unet", calls["unet"] + 1))
    denoiser.unet.middle_block.register_forward_pre_hook(
        lambda *_: calls.__setitem__("middle", calls["middle"] + 1)
    )
    request = {"steps": args.steps} if args.steps else {}
    pipe(prompts[0].text, seed=0, **request)  # warm-up, not timed or counted
    calls.update(unet=0, middle=0)
    pixels: list[np.ndarray] = []

    def generate(prompt: str, batch: list[int]):
        images = list(pipe(prompt, seed=batch[0], batch_size=len(batch), **request).images)
        pixels.extend(np.asarray(im.convert("RGB"), dtype=np.float64) / 255 for im in images)
        return images

    start = time.perf_counter()
    report, _ = evaluate(generate, prompts, seeds, judge=judge, progress=False, keep_images=False)
    seconds = time.perf_counter() - start
    n = report.n_images
    return {
        "interval": interval,
        "build_options": options,
        "alignment": report.alignment,
        "frechet_distance": report.frechet_distance,
        "seconds_per_image": seconds / n,
        "unet_calls_per_prompt_batch": calls["unet"] / len(prompts),
        "full_calls_per_prompt_batch": calls["middle"] / len(prompts),
        "cached_calls_per_prompt_batch": (calls["unet"] - calls["middle"]) / len(prompts),
        "n_images": n,
        "_pixels": np.stack(pixels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--intervals", default="1,2,3", help="comma-separated; 1 = off")
    parser.add_argument("--branch", type=int, default=None, help="deepcache_branch (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (recipe: 25)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from t2i.shapes.evaluate import PROMPT_SET_VERSION, prompt_set
    from t2i.shapes.judge import load_judge

    intervals = [int(v) for v in args.intervals.split(",")]
    if 1 not in intervals:
        intervals = [1, *intervals]  # the reference of the image error
    prompts, seeds, judge = prompt_set(args.prompts), list(range(args.seeds)), load_judge()
    rows = {i: run_setting(i, args, prompts, seeds, judge) for i in intervals}
    ref = rows[1]["_pixels"]
    for row in rows.values():
        px = row.pop("_pixels")
        row["relative_error_vs_off"] = float(np.linalg.norm(px - ref) / np.linalg.norm(ref))
        row["mean_abs_diff_vs_off_255"] = float(np.abs(px - ref).mean() * 255)
        print(json.dumps(row))
    result = {
        "benchmark": "deepcache_shapes",
        "recipe": "ldm-shapes",
        "prompt_set": PROMPT_SET_VERSION,
        "prompts": args.prompts,
        "seeds": seeds,
        "steps": args.steps or 25,
        "sampler": "dpmpp_2m (recipe default), cfg 5.0, cond+uncond batched",
        "branch": args.branch if args.branch is not None else 1,
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "note": "*_calls_per_prompt_batch count UNet forwards per prompt (its seeds are one batch; "
        "cond+uncond are one call); full = calls that ran the middle block",
        "results": list(rows.values()),
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
