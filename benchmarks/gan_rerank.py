"""Does the GAN's matching-aware discriminator pick better samples? Rerank K candidates.

For each prompt and seed of the shapes evaluation set, K latent candidates (seeds
``s + 100003 k``, z clamped at 2 as the recipe does) are generated, netC(netD(x), sentence)
scores each, and the best is judged (the GAN analogue of DALL-E's CLIP reranking). K=1 is the
plain generator. Needs a model folder with netD and netC (a ``t2i train gan`` run's
``model/``; the shipped gan-shapes has the generator only). Writes one JSON line per K.

    python benchmarks/gan_rerank.py RUN/model --k 1 8 --prompts 64 --seeds 4 --out r.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from t2i_gan.checkpoint import load_gan
from t2i_gan.probe import _text

from t2i.payloads import Image
from t2i.shapes.evaluate import evaluate, prompt_set
from t2i.shapes.judge import load_judge
from t2i.single_pass.sampling import draw_z


def run(folder: str, k: int, n_prompts: int, n_seeds: int) -> dict:
    gan = load_gan(folder)
    if gan.netD is None or gan.netC is None:
        raise SystemExit(f"{folder} has no netD / netC: pass a training run's model folder")
    prompts = prompt_set(n_prompts)
    vectors = _text([p.text for p in prompts], None, bool(gan.config.word_queries))

    @torch.no_grad()
    def generate(prompt: str, seeds: list[int]) -> list:
        out = []
        for s in seeds:
            z = draw_z(tuple(s + 100003 * i for i in range(k)), gan.config.z_dim, device="cpu")
            text = [x.expand(k, *x.shape) for x in vectors[prompt]]
            x = gan.netG(z.clamp(-2, 2), *text).float()
            best = int(gan.netC(gan.netD(x), *text).argmax()) if k > 1 else 0
            out.append(Image(((x[best : best + 1] + 1) / 2).clamp(0, 1)).to_pil()[0])
        return out

    started = time.time()
    report, _ = evaluate(
        generate, prompts, list(range(n_seeds)), judge=load_judge(), progress=False,
        keep_images=False,
    )  # fmt: skip
    return {
        "k": k,
        **{name: round(v, 3) for name, v in report.alignment.items()},
        "fd": round(report.frechet_distance, 2),
        "diversity": round(report.diversity, 2),
        "seconds": round(time.time() - started, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = [run(args.folder, k, args.prompts, args.seeds) for k in args.k]
    args.out.write_text(json.dumps({"folder": args.folder, "rows": rows}, indent=1) + "\n")
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
