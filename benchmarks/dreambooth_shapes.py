"""DreamBooth measured on a shapes subject (issue 16.5), judged by the shapes judge.

Subject: a large two-colour star (left half pink, right half cyan, white background) that
ldm-shapes never saw (its objects are one colour), 4 images with small jitter. Runs on the
embedded ldm-shapes model: full and LoRA, each with and without prior preservation
(class "a star", 100 class images from the frozen model), plus the base model. Reported:

- subject fidelity: mean cosine of the judge's features, images of "a sks star" vs the
  instance images (the DINO metric's analogue); ``instance_self``: the instances among
  themselves, the ceiling;
- prompt fidelity: share of "a sks star on the left / ... / a small sks star" images whose
  stated position / size (and the shape star) the judge reads back;
- language drift on class prompts ("a red star on the left", ...): the judge's alignment
  and the diversity across seeds, vs the base model's.

Writes ``$OUT/dreambooth_shapes.json`` (and a grid PNG per run). Environment: ``STEPS`` (400),
``DEVICE``, ``SEEDS`` (8 per prompt), ``CLASS_IMAGES`` (100), ``FULL_LR`` (5e-5), ``LORA_LR``
(5e-4), ``RUNS`` (all).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

OUT = Path(os.environ.get("OUT", "out"))
WORK = Path(os.environ.get("WORK", "/tmp/dreambooth_shapes"))
STEPS, SEEDS = int(os.environ.get("STEPS", 400)), int(os.environ.get("SEEDS", 8))
DEVICE = os.environ.get("DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
CLASS_IMAGES = int(os.environ.get("CLASS_IMAGES", 100))
FULL_LR, LORA_LR = float(os.environ.get("FULL_LR", 5e-5)), float(os.environ.get("LORA_LR", 5e-4))
RUNS = os.environ.get("RUNS", "full full+prior lora lora+prior").split()
GEN_STEPS = int(os.environ.get("GEN_STEPS", 25))  # ldm-shapes' default sampling steps
SUBJECT_PROMPT, CLASS_PROMPT = "a sks star", "a star"
FIDELITY_PROMPTS = {  # prompt -> (size, position) it states; the shape is a star
    "a sks star on the left": (None, "left"),
    "a sks star on the right": (None, "right"),
    "a sks star at the top": (None, "top"),
    "a sks star at the bottom": (None, "bottom"),
    "a small sks star in the center": ("small", "center"),
    "a large sks star in the center": ("large", "center"),
}
DRIFT_PROMPTS = [
    "a red star on the left",
    "a blue star on the right",
    "a small green star at the top",
    "a large yellow star in the center",
    "a purple star at the bottom",
    "an orange star on the left",
]


def _features(judge, images) -> torch.Tensor:
    _, feats = judge.predict(images)
    return torch.nn.functional.normalize(feats.double(), dim=-1)


def _stated(prompt: str):
    from t2i.shapes.captions import parse_caption
    from t2i.shapes.scene import Scene, ShapeSpec

    if prompt in FIDELITY_PROMPTS:
        size, position = FIDELITY_PROMPTS[prompt]
        return Scene((ShapeSpec("star", None, size, position),))
    return parse_caption(prompt)


def evaluate(pipe, judge, instance: list[Image.Image]) -> dict:
    """The three measures for one pipeline."""
    from t2i.shapes.metrics import attribute_matches, diversity, prompt_alignment

    seeds = list(range(1000, 1000 + SEEDS))
    gen = lambda p: pipe(p, seed=seeds[0], batch_size=len(seeds), steps=GEN_STEPS).images  # noqa: E731
    subject = _features(judge, gen(SUBJECT_PROMPT))
    ref = _features(judge, instance)
    fidelity = float((subject @ ref.T).mean())
    hits = []
    for prompt in FIDELITY_PROMPTS:
        stated = _stated(prompt)
        for read in judge.read(gen(prompt)):
            m = attribute_matches(stated, read)
            hits.append(all(v for k, v in m.items() if k != "single.color"))
    stated, read, feats = [], [], []
    for prompt in DRIFT_PROMPTS:
        images = gen(prompt)
        stated += [_stated(prompt)] * len(images)
        read += judge.read(images)
        feats.append(judge.predict(images)[1].numpy())
    return {
        "subject_fidelity": round(fidelity, 4),
        "prompt_fidelity": round(float(np.mean(hits)), 4),
        "class_alignment": round(prompt_alignment(stated, read)["overall"], 4),
        "class_diversity": round(diversity(feats), 4),
    }


def run(name: str, instance_dir: Path) -> Path:
    from t2i_dreambooth import DreamBoothOptions, dreambooth

    lora, prior = name.startswith("lora"), name.endswith("+prior")
    out = WORK / name
    shutil.rmtree(out, ignore_errors=True)
    return dreambooth(
        DreamBoothOptions(
            recipe="ldm-shapes",
            instance_dir=instance_dir,
            instance_prompt=SUBJECT_PROMPT,
            class_prompt=CLASS_PROMPT,
            prior_preservation=prior,
            num_class_images=CLASS_IMAGES,
            class_dir=str(WORK / "class_images"),
            sample_batch_size=50,
            output_dir=out,
            lora=lora,
            learning_rate=LORA_LR if lora else FULL_LR,
            steps=STEPS,
            batch_size=4,
            checkpointing_steps=max(STEPS, 1),
            validation_prompts=(SUBJECT_PROMPT, "a sks star on the left", "a red star"),
            validation_steps=max(STEPS, 1),
            device=DEVICE,
        )
    )


def main() -> None:
    from t2i import Engine
    from t2i.shapes.judge import load_judge

    OUT.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    from t2i_dreambooth.example import subject_images

    instance_dir = subject_images(WORK / "subject")
    instance = [Image.open(p).convert("RGB") for p in sorted(instance_dir.glob("*.png"))]
    judge = load_judge(device=DEVICE)
    ref = _features(judge, instance)
    results = {
        "subject": "two-colour star (pink | cyan), 4 images, white background",
        "steps": STEPS,
        "seeds_per_prompt": SEEDS,
        "class_images": CLASS_IMAGES,
        "full_lr": FULL_LR,
        "lora_lr": LORA_LR,
        "batch": 4,
        "device": DEVICE,
        "instance_self_fidelity": round(float((ref @ ref.T).mean()), 4),
        "base": evaluate(Engine.build("ldm-shapes", device=DEVICE), judge, instance),
    }
    print("base", results["base"], file=sys.stderr, flush=True)
    for name in RUNS:
        started = time.perf_counter()
        model = run(name, instance_dir)
        seconds = time.perf_counter() - started
        build = (
            {"lora": str(model / "lora.safetensors")}
            if name.startswith("lora")
            else {"weights": str(model)}
        )
        pipe = Engine.build("ldm-shapes", device=DEVICE, **build)
        results[name] = {**evaluate(pipe, judge, instance), "train_seconds": round(seconds, 1)}
        print(name, results[name], file=sys.stderr, flush=True)
        grid = sorted((WORK / name / "validation").glob("*.png"))
        if grid:
            shutil.copy(grid[-1], OUT / f"dreambooth_shapes_{name.replace('+', '_')}.png")
        (OUT / "dreambooth_shapes.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
