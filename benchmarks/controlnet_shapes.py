"""A canny ControlNet for the embedded ``ldm-shapes`` model, trained and judged on the shapes
benchmark: does steering with the edge map of the scene a prompt describes raise the judge's
alignment?

    python benchmarks/controlnet_shapes.py data DIR --n 4000          # images + captions
    t2i train controlnet --recipe ldm-shapes --data DIR --preprocessor canny --size 64 \\
        --steps 600 --batch-size 32 --lr 1e-4 --out RUN --device cpu
    python benchmarks/controlnet_shapes.py eval RUN/model/controlnet.safetensors \\
        --prompts 32 --seeds 2 --out results/controlnet_shapes.json

``eval`` renders each evaluation prompt's scene (the benchmark's own renderer, a seed per
image), takes its canny map as the control image, and scores ``ldm-shapes`` with and without
the ControlNet on the same prompts and seeds (the judge, as ``t2i eval``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def write_data(folder: Path, n: int) -> None:
    """``n`` rendered training scenes: ``NNNNN.png`` + ``NNNNN.txt`` (the caption)."""
    from t2i.shapes.dataset import make_sample

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sample = make_sample("train", i)
        sample.image.save(folder / f"{i:05d}.png")
        (folder / f"{i:05d}.txt").write_text(sample.caption.text)


def evaluate(controlnet: Path, prompts: int, seeds: int) -> dict:
    from t2i import Engine
    from t2i.shapes.evaluate import evaluate as judge_eval
    from t2i.shapes.evaluate import prompt_set
    from t2i.shapes.render import render
    from t2i_ldm.controlnet_preprocess import preprocess

    chosen = prompt_set(prompts)
    maps = {p.text: [preprocess(render(p.scene, 64, seed=1000 + s), "canny") for s in
                     range(seeds)] for p in chosen}  # fmt: skip
    plain = Engine.build("ldm-shapes")
    steered = Engine.build("ldm-shapes", controlnet=str(controlnet))

    def generate_plain(prompt, seed_list):
        return [plain(prompt, seed=s).images[0] for s in seed_list]

    def generate_steered(prompt, seed_list):
        return [steered(prompt, seed=s, control_image=m).images[0]
                for s, m in zip(seed_list, maps[prompt])]  # fmt: skip

    out = {}
    for name, fn in (("ldm-shapes", generate_plain), ("ldm-shapes + canny ControlNet",
                                                      generate_steered)):  # fmt: skip
        report, _ = judge_eval(fn, chosen, list(range(seeds)), progress=False)
        out[name] = {"alignment": report.alignment, "per_attribute": report.per_attribute,
                     "frechet_distance": report.frechet_distance}  # fmt: skip
        print(name, json.dumps(report.alignment), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data")
    data.add_argument("folder", type=Path)
    data.add_argument("--n", type=int, default=4000)
    ev = sub.add_parser("eval")
    ev.add_argument("controlnet", type=Path)
    ev.add_argument("--prompts", type=int, default=32)
    ev.add_argument("--seeds", type=int, default=2)
    ev.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.command == "data":
        write_data(args.folder, args.n)
        return
    result = evaluate(args.controlnet, args.prompts, args.seeds)
    args.out.write_text(json.dumps({"prompts": args.prompts, "seeds": args.seeds, **result},
                                   indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
