"""Imagen's noise-conditioning comparison on imagen-shapes: the same prompts and seeds with
the SR stage's sampling-time augmentation off (noise_level 0) and at other levels.

Writes one JSON of the shapes-benchmark scores per level (alignment, per attribute, FD).
Usage: python benchmarks/imagen_noise_levels.py OUT.json [--checkpoint FOLDER] [--device cuda]
       [--levels 0,100,250,500] [--prompts 64] [--seeds 4]
(the paper's second arm, an SR model *trained* without augmentation, needs its own training
run: not measured here).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--levels", default="0,100,250,500")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    from t2i.shapes.evaluate import evaluate_recipe

    results = {}
    for level in [int(v) for v in args.levels.split(",")]:
        start = time.time()
        options = {"noise_level": level}
        if args.device:
            options["device"] = args.device
        report = evaluate_recipe(
            "imagen-shapes", args.checkpoint, n_prompts=args.prompts, n_seeds=args.seeds,
            batch_size=args.seeds, progress=False, **options,
        )  # fmt: skip
        data = report.to_dict()
        results[level] = {k: v for k, v in data.items() if not isinstance(v, list)}
        results[level]["seconds"] = round(time.time() - start, 1)
        print(level, json.dumps(results[level]["alignment"]), flush=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
