"""Train the shapes judge; ``python -m t2i.shapes.train_judge --out DIR``.

Recipe: a pool of renders of *all* combinations (held-out ones too: the judge must read every
scene the generators are asked for), drawn from a seed range of its own
(``JUDGE_SEED_BASE``, disjoint from the dataset splits), rendered at 32, 64 and 128 px and
resized to the judge's 64 px by the judge's own :func:`~t2i.shapes.judge.prepare`. Each batch
gets :func:`~t2i.shapes.augment.random_degrade` (85% of images). AdamW, cosine learning rate,
bf16 autocast on CUDA, cross-entropy summed over the heads that apply to each scene.

Evaluation (written to ``DIR/metrics.json``): per-head accuracy on fresh renders of the
``test`` split at each size, clean and under each fixed degradation of
:data:`~t2i.shapes.augment.DEGRADATIONS`. Weights go to ``DIR/judge.safetensors``; a resumable
checkpoint ``DIR/judge_ckpt.pt`` is written atomically every ``--ckpt-every`` steps.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F

from t2i.shapes.augment import DEGRADATIONS, random_degrade
from t2i.shapes.dataset import make_sample
from t2i.shapes.judge import HEADS, IGNORE, ShapesJudge, prepare, save_judge, scene_targets
from t2i.shapes.render import render
from t2i.shapes.splits import random_scene

log = structlog.get_logger(__name__)

JUDGE_SEED_BASE = 5 * 10**12
SIZE_CHOICES = (32, 64, 128)
SIZE_PROBS = (0.3, 0.4, 0.3)


def _to_uint8_64(image) -> np.ndarray:
    x = prepare(image)[0]  # (3, 64, 64) float in [0, 1]
    return (x * 255).round().to(torch.uint8).numpy()


def _render_chunk(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    start, count = args
    torch.set_num_threads(1)
    images = np.empty((count, 3, 64, 64), np.uint8)
    targets = np.empty((count, len(HEADS)), np.int64)
    for j in range(count):
        rng = np.random.default_rng(JUDGE_SEED_BASE + start + j)
        scene = random_scene(rng, "pair" if rng.random() < 0.5 else "single")
        size = int(rng.choice(SIZE_CHOICES, p=SIZE_PROBS))
        images[j] = _to_uint8_64(render(scene, size, seed=int(rng.integers(2**63))))
        targets[j] = list(scene_targets(scene).values())
    return images, targets


def _test_chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    start, count, size = args
    torch.set_num_threads(1)
    images = np.empty((count, 3, 64, 64), np.uint8)
    targets = np.empty((count, len(HEADS)), np.int64)
    for j in range(count):
        item = make_sample("test", start + j, size=size, seed=1)
        images[j] = _to_uint8_64(item.image)
        targets[j] = list(scene_targets(item.scene).values())
    return images, targets


def _parallel(fn, jobs, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    if workers <= 1:
        parts = [fn(j) for j in jobs]
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(fn, jobs)
    return torch.from_numpy(np.concatenate([p[0] for p in parts])), torch.from_numpy(
        np.concatenate([p[1] for p in parts])
    )


def render_pool(n: int, workers: int, chunk: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training renders as uint8 ``(n, 3, 64, 64)`` and targets ``(n, heads)``."""
    jobs = [(s, min(chunk, n - s)) for s in range(0, n, chunk)]
    return _parallel(_render_chunk, jobs, workers)


def render_test(n: int, size: int, workers: int, chunk: int = 500):
    """``n`` fresh renders of the test split at ``size`` px (judge input) and their targets."""
    jobs = [(s, min(chunk, n - s), size) for s in range(0, n, chunk)]
    return _parallel(_test_chunk, jobs, workers)


def loss_fn(logits: dict[str, torch.Tensor], targets: torch.Tensor, smoothing: float):
    total = 0.0
    for k, name in enumerate(HEADS):
        t = targets[:, k]
        if (t != IGNORE).any():
            total = total + F.cross_entropy(
                logits[name].float(), t, ignore_index=IGNORE, label_smoothing=smoothing
            )
    return total


@torch.no_grad()
def accuracy(model, images_u8: torch.Tensor, targets: torch.Tensor, degrade=None, seed=0):
    """Per-head accuracy (over the images the head applies to) and exact-scene accuracy."""
    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    correct = torch.zeros(len(HEADS), dtype=torch.long)
    counted = torch.zeros(len(HEADS), dtype=torch.long)
    exact = 0
    for s in range(0, images_u8.shape[0], 1024):
        x = images_u8[s : s + 1024].to(dev).float() / 255.0
        t = targets[s : s + 1024].to(dev)
        if degrade is not None:
            x = degrade(x, g)
        logits = model(x)
        ok_all = torch.ones(x.shape[0], dtype=torch.bool, device=dev)
        for k, name in enumerate(HEADS):
            valid = t[:, k] != IGNORE
            ok = (logits[name].argmax(-1) == t[:, k]) | ~valid
            ok_all &= ok
            correct[k] += int((ok & valid).sum())
            counted[k] += int(valid.sum())
        exact += int(ok_all.sum())
    model.train()
    out = {name: float(correct[k] / max(int(counted[k]), 1)) for k, name in enumerate(HEADS)}
    out["exact_scene"] = exact / images_u8.shape[0]
    return out


def _save_checkpoint(path: Path, model, opt, step: int) -> None:
    from t2i.files import write_atomically

    state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step}
    write_atomically(path, lambda f: torch.save(state, f))


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(max(1, args.threads))
    t0 = time.time()
    images, targets = render_pool(args.pool, args.workers)
    log.info("judge.pool", n=args.pool, seconds=round(time.time() - t0, 1))
    images, targets = images.to(dev), targets.to(dev)

    model = ShapesJudge(width=args.width).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    ckpt = out / "judge_ckpt.pt"
    step = 0
    if ckpt.exists() and args.resume:
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        log.info("judge.resume", step=step)
    g = torch.Generator(device=dev).manual_seed(args.seed)
    t_train = time.time()
    budget = args.max_minutes * 60
    while step < args.steps:
        progress = max(step / args.steps, (time.time() - t_train) / budget)
        if progress >= 1:
            log.info("judge.time_budget_reached", step=step)
            break
        warm = min(1.0, step / 300)
        lr = args.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, images.shape[0], (args.batch_size,), generator=g, device=dev)
        x = images[idx].float() / 255.0
        keep_clean = (torch.rand(x.shape[0], generator=g, device=dev) < 0.15).view(-1, 1, 1, 1)
        x = torch.where(keep_clean, x, random_degrade(x, g))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = model(x)
        loss = loss_fn(logits, targets[idx], args.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == 1:
            log.info("judge.step", step=step, loss=round(float(loss.detach()), 4), lr=f"{lr:.2e}",
                     elapsed=round(time.time() - t_train, 1))  # fmt: skip
        if args.ckpt_every and step % args.ckpt_every == 0:
            _save_checkpoint(ckpt, model, opt, step)
    train_seconds = time.time() - t_train

    metrics: dict = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor(),
        "steps": step,
        "batch_size": args.batch_size,
        "pool": args.pool,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "args": vars(args),
        "clean": {},
        "degraded_64": {},
    }
    for size in SIZE_CHOICES:
        ti, tt = render_test(args.test_n, size, args.workers)
        metrics["clean"][str(size)] = accuracy(model, ti, tt)
        if size == 64:
            for name, fn in DEGRADATIONS.items():
                metrics["degraded_64"][name] = accuracy(model, ti, tt, degrade=fn, seed=1)
    save_judge(model, out / "judge.safetensors", extra={"steps": step, "device": metrics["device"]})
    metrics["total_seconds"] = round(time.time() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("judge.done", out=str(out), clean64=metrics["clean"]["64"]["exact_scene"])
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (weights, metrics, checkpoint)")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--max-minutes", type=float, default=5.0, help="training time budget")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--pool", type=int, default=300_000, help="number of training renders")
    p.add_argument("--test-n", type=int, default=4000, help="test renders per size")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    p.add_argument("--label-smoothing", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=int, default=2000)
    p.add_argument("--resume", action="store_true", help="continue from DIR/judge_ckpt.pt")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if CUDA is present")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point: parse arguments, log at ``--log-level`` (default info) and train."""
    from t2i.logs import configure_logging

    args = parse_args(argv)
    configure_logging(args.log_level)
    train(args)


if __name__ == "__main__":
    main()
