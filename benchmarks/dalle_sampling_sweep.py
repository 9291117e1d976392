"""dalle-shapes' sampling settings judged: super-conditioning scale x top-k x temperature.

Each setting builds ``Engine.build("dalle-shapes", checkpoint=..., cfg_scale=s, top_k=k,
temperature=T)`` and runs the shapes evaluation (same prompts and seeds for every setting),
recording alignment (overall / single / pair), Fréchet distance, diversity and seconds per
image; the JSON is rewritten after every setting, so a run cut short keeps what it measured.

    python benchmarks/dalle_sampling_sweep.py --checkpoint RUN/model --out sweep.json \
        [--cfg 1,3,6,10] [--top-k 64] [--temperature 1.0] [--prompts 32 --seeds 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import torch


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def run_setting(args: argparse.Namespace, setting: dict, prompts, seeds, judge) -> dict:
    """Generate and judge every prompt x seed with one setting."""
    from t2i import Engine
    from t2i.shapes.evaluate import evaluate

    pipe = Engine.build("dalle-shapes", checkpoint=args.checkpoint, device=args.device, **setting)

    def generate(prompt: str, batch: list[int]):
        return list(pipe(prompt, seed=batch[0], batch_size=len(batch)).images)

    start = time.perf_counter()
    report, _ = evaluate(generate, prompts, seeds, judge=judge, progress=False, keep_images=False)
    seconds = time.perf_counter() - start
    return {
        **setting,
        "alignment": report.alignment,
        "per_attribute": report.per_attribute,
        "frechet_distance": report.frechet_distance,
        "diversity": report.diversity,
        "seconds_per_image": seconds / report.n_images,
        "n_images": report.n_images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a dalle-shapes model folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--cfg", type=floats, default=[1.0, 3.0, 6.0, 10.0])
    parser.add_argument("--top-k", type=lambda t: [int(v) for v in t.split(",")], default=[64])
    parser.add_argument("--temperature", type=floats, default=[1.0])
    args = parser.parse_args()

    from t2i.shapes.evaluate import PROMPT_SET_VERSION, prompt_set
    from t2i.shapes.judge import load_judge

    prompts, seeds, judge = prompt_set(args.prompts), list(range(args.seeds)), load_judge()
    result = {
        "benchmark": "dalle_sampling_sweep",
        "checkpoint": str(args.checkpoint),
        "prompt_set": PROMPT_SET_VERSION,
        "prompts": args.prompts,
        "seeds": seeds,
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "results": [],
    }
    for cfg, k, temp in itertools.product(args.cfg, args.top_k, args.temperature):
        setting = {"cfg_scale": cfg, "top_k": k, "temperature": temp}
        row = run_setting(args, setting, prompts, seeds, judge)
        print(json.dumps({key: row[key] for key in ("cfg_scale", "top_k", "temperature",
                                                    "alignment", "frechet_distance")}),
              flush=True)  # fmt: skip
        result["results"].append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
