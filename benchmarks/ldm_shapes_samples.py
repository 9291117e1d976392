"""A labelled grid of ldm-shapes samples (a quick look after training; not a metric).

Usage: python benchmarks/ldm_shapes_samples.py MODEL_DIR OUT.png [--device cuda]
"""

import argparse

from t2i import Engine
from t2i.matrix import labelled_grid

PROMPTS = [
    "a large red circle on the left",
    "a small blue square at the top",
    "a green triangle in the center",
    "a yellow star on the right",
    "a purple hexagon at the bottom on a black background",
    "a red circle to the left of a blue square",
    "a green star above a pink heart",
    "an orange diamond below a cyan cross",
]

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("out")
parser.add_argument("--device", default="cpu")
parser.add_argument("--seeds", type=int, default=4)
args = parser.parse_args()
pipe = Engine.build("ldm-shapes", checkpoint=args.model, device=args.device)
images, labels = [], []
for prompt in PROMPTS:
    result = pipe(prompt, seed=1, batch_size=args.seeds)
    images += result.images
    labels += [prompt[:18]] * args.seeds
labelled_grid(images, labels, columns=args.seeds * 2).save(args.out)
print("wrote", args.out)
