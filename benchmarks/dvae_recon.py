"""What survives a dVAE's tokens: the shapes judge on its reconstructions of test renders.

For each dVAE model folder given (a ``t2i train dalle --stage vae`` output), encode held-out
benchmark renders to argmax tokens, decode, and let the judge read both the renders and the
reconstructions; per attribute, the share read as the scene states. The prior can at best
reproduce what the tokens carry, so the reconstructions' alignment bounds dalle-shapes'.

    python benchmarks/dvae_recon.py RUN/model [RUN2/model ...] --images 256 --device cuda \
        --out recon.json [--grid grid.png]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
import torch

from t2i.shapes.dataset import make_sample, pil_to_tensor
from t2i.shapes.judge import load_judge
from t2i.shapes.metrics import attribute_matches
from t2i_dalle.checkpoint import load_dalle


def judged(judge, samples, images: torch.Tensor) -> dict[str, dict[str, float]]:
    """Share of matches per attribute, for single- and two-object scenes apart."""
    acc: dict[str, dict[str, list]] = {"single": defaultdict(list), "pair": defaultdict(list)}
    for sample, read in zip(samples, judge.read(images.float().cpu())):
        kind = "pair" if len(sample.scene.objects) > 1 else "single"
        for name, ok in attribute_matches(sample.scene, read).items():
            acc[kind][name].append(float(ok))
    return {k: {n: round(float(np.mean(v)), 3) for n, v in d.items()} for k, d in acc.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    ap.add_argument("--grid", help="PNG: renders over reconstructions of the first model")
    args = ap.parse_args()
    judge = load_judge()
    samples = [make_sample("test", i, 64, pair_fraction=0.6) for i in range(args.images)]
    x = torch.stack([pil_to_tensor(s.image) for s in samples])
    report = {"images": args.images, "real": judged(judge, samples, x), "models": {}}
    for n, folder in enumerate(args.folders):
        model = load_dalle(folder, need_transformer=False)
        enc, dec = model.encoder.to(args.device), model.decoder.to(args.device)
        with torch.no_grad():
            tokens = torch.cat([enc.tokens(c.to(args.device)) for c in x.split(64)])
            rec = torch.cat([dec.images(t).clamp(0, 1).cpu() for t in tokens.split(64)])
        row = judged(judge, samples, rec)
        row["codes_used"] = int(torch.unique(tokens).numel())
        row["l1"] = round(float((rec - x).abs().mean()), 4)
        report["models"][folder] = row
        print(folder, json.dumps(row))
        if n == 0 and args.grid:
            from PIL import Image

            grid = torch.cat([torch.cat(list(x[:8]), 2), torch.cat(list(rec[:8]), 2)], 1)
            pixels = (grid.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            Image.fromarray(pixels).resize((1024, 256), Image.NEAREST).save(args.grid)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
