"""``t2i train gan``: the gan-shapes GAN on the core loop (DF-GAN, Tao et al. CVPR 2022).

Data: ``--images`` benchmark renders (64 px) with their frozen MiniLM sentence vectors
(:mod:`t2i_gan.data`); model: :class:`t2i_gan.trainable.GanTrainable` (a stepped model: one D
step, then one G step, per loop step). The loop runs in legs of ``--eval-every`` steps, each
resuming the previous one's state; after each leg the EMA generator is scored by the judge
on a fixed prompt set and ``curves.json`` / ``curves.png`` are redrawn. Resumable after a
kill (the loop's atomic state: G, D, C, both optimizers, the EMA, the data position).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, ClassVar

import attrs
import structlog
import torch

from t2i.training import RandomBatches, TrainConfig, Trainer, TrainerOption, TrainOptionsError
from t2i.training import train as train_loop

log = structlog.get_logger("t2i_gan.train")

TINY = {"nf": 4, "eval_prompts": 2}
"""``--tiny``: a 4-channel GAN on at most 64 renders (tests and CPU smoke runs)."""


def _device(config: TrainConfig) -> torch.device:
    if config.device:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check(images: int, nf: int, d_lr_ratio: float, eval_every: int, pair_fraction: float, gp,
           word_queries: int = 0) -> None:  # fmt: skip
    words = f"--word-queries must be >= 0 (0: the sentence vector alone), got {word_queries}"
    rules = (
        (word_queries >= 0, words),
        (gp[0] >= 0, f"--gp-weight must be >= 0, got {gp[0]}"),
        (gp[1] >= 0, f"--gp-sentence-weight must be >= 0, got {gp[1]}"),
        (images >= 2, f"--images must be >= 2, got {images}"),
        (nf >= 1, f"--nf must be >= 1, got {nf}"),
        (d_lr_ratio > 0, f"--d-lr-ratio must be > 0, got {d_lr_ratio}"),
        (eval_every >= 0, f"--eval-every must be >= 0 (0: no judge), got {eval_every}"),
        (0 <= pair_fraction <= 1, f"--pair-fraction must be in [0, 1], got {pair_fraction}"),
    )
    for ok, message in rules:
        if not ok:
            raise TrainOptionsError(message)


def _load_init(model, config, folder: Path) -> dict[str, Any]:
    """Copy a model folder's nets into ``model`` (``--init``); what it was, for the record."""
    from t2i_gan.checkpoint import load_gan

    loaded = load_gan(folder)
    widened = _adds_words(loaded.config, config)
    if loaded.config != config and not widened:
        raise TrainOptionsError(
            f"--init {folder}: its config {attrs.asdict(loaded.config)} differs from this run's "
            f"{attrs.asdict(config)}; pass the same --nf / conditioning flags (--word-queries ...)"
        )
    missing = [p for p in ("netD", "netC") if getattr(loaded, p) is None]
    if missing:
        raise TrainOptionsError(
            f"--init {folder} has no {' or '.join(missing)}.safetensors: a GAN can only be "
            "continued from a t2i train gan folder that kept its discriminator"
        )
    for part in ("netG", "netD", "netC"):  # widened: netG's and netC's word_pool.* stay fresh
        state = getattr(loaded, part).state_dict()
        getattr(model, part).load_state_dict(state, strict=not widened)
    steps = loaded.training.get("steps")
    log.info("gan.init", folder=str(folder), steps=steps, word_pool="fresh" if widened else None)
    # the earlier run's record rides along, so the training compute of a chain of runs adds up
    return {
        "folder": str(folder), "steps": steps, "training": loaded.training,
        **({"word_pool": "fresh"} if widened else {}),
    }  # fmt: skip


def _adds_words(loaded, config) -> bool:
    """Whether ``config`` is ``loaded``'s sentence-vector config plus word pooling: ``--init``
    then loads every net but the fresh ``word_pool`` (whose word block starts at 0, so G and C
    start as the loaded ones)."""
    same = attrs.evolve(loaded, word_queries=config.word_queries, word_heads=config.word_heads)
    return loaded.word_queries == 0 and config.word_queries > 0 and same == config


class GanTrainer(Trainer):
    """Train the gan-shapes GAN (DF-GAN: hinge + matching-aware GP, EMA generator).

    Writes OUT/gan.state.pt (resumable), OUT/curves.json + curves.png (D/G loss, MA-GP,
    judge alignment every --eval-every steps) and OUT/model/ (model.json, netG/netD/netC
    safetensors; netG is the EMA generator), which `--recipe gan-shapes --option
    checkpoint=OUT/model` runs.
    """

    options = (
        TrainerOption("--images", int, 44_000, help="Benchmark renders to train on."),
        TrainerOption("--vectors", str, help="Folder of precomputed MiniLM vectors (chunk*.pt)."),
        TrainerOption("--pair-fraction", float, 0.6, help="Share of two-object scenes."),
        TrainerOption("--nf", int, 32, help="DF-GAN's channel base (ngf = ndf)."),
        TrainerOption("--d-lr-ratio", float, 4.0, help="D's learning rate / G's (--lr)."),
        TrainerOption("--eval-every", int, 1000, help="Steps between judge probes (0: none)."),
        TrainerOption("--eval-prompts", int, 32, help="Prompts of the judge probe."),
        TrainerOption("--tiny", is_flag=True, help="A tiny GAN on 64 renders (tests, CPU)."),
        TrainerOption(
            "--no-cond-norm",
            is_flag=True,
            help="DF-GAN's conditioning as is: the sentence vector x sqrt(384), not standardised.",
        ),
        TrainerOption(
            "--no-projection", is_flag=True, help="No projection term in the discriminator."
        ),
        TrainerOption(
            "--init",
            str,
            help="Start from a model folder's netG/netD/netC (an earlier run's OUT/model; its "
            "config must match, or lack only --word-queries: the word pooling then starts "
            "fresh); the optimisers start fresh.",
        ),
        TrainerOption(
            "--word-queries",
            int,
            0,
            help="Learned queries of a word pooling over MiniLM's per-token states in G and C "
            "(binds attributes to objects; 0: the mean-pooled sentence vector alone, DF-GAN's).",
        ),
        TrainerOption("--gp-weight", float, 2.0, help="MA-GP's weight (DF-GAN: 2)."),
        TrainerOption(
            "--gp-sentence-weight",
            float,
            1.0,
            help="The sentence gradient's share of MA-GP's norm (1: DF-GAN; 0: image only).",
        ),
    )
    defaults: ClassVar[dict[str, Any]] = {
        "steps": 20_000,
        "batch_size": 128,
        "lr": 1e-4,
        "ema_decay": 0.999,
        "save_every": 500,
        "log_every": 50,
    }
    loop_help: ClassVar[dict[str, str]] = {
        "lr": "The generator's learning rate (Adam, betas (0, 0.9)); D's is --d-lr-ratio x it."
    }

    def run(self, config: TrainConfig, out: Path, **options: Any) -> Path:
        from t2i_gan.curves import Curves
        from t2i_gan.data import training_set
        from t2i_gan.models import GanConfig
        from t2i_gan.text import SENTENCE_DIM
        from t2i_gan.trainable import GanTrainable

        if options.pop("tiny"):
            options.update(TINY, images=min(options["images"], 64))
        vectors = options["vectors"]
        n, nf, ratio = options["images"], options["nf"], options["d_lr_ratio"]
        gp = (options["gp_weight"], options["gp_sentence_weight"])
        words = options["word_queries"]
        _check(n, nf, ratio, options["eval_every"], options["pair_fraction"], gp, words)
        device, out = _device(config), Path(out)
        torch.manual_seed(config.seed)
        init = options.pop("init", None)
        record = {"trainer": "gan", **{k: v for k, v in options.items() if k != "vectors"}}
        norm = not options["no_cond_norm"]
        gan_config = GanConfig(
            nf=nf,
            z_dim=100,
            cond_dim=SENTENCE_DIM,
            image_size=64,
            cond_scale=1.0 if norm else math.sqrt(SENTENCE_DIM),
            cond_norm=norm,
            projection=not options["no_projection"],
            word_queries=words,
        )
        model = GanTrainable(
            gan_config, d_lr_ratio=ratio, gp_weight=gp[0], gp_sentence_weight=gp[1], training=record
        )
        images, text = training_set(
            n, 64, pair_fraction=options["pair_fraction"], vectors=vectors, device=device,
            words=words > 0,
        )  # fmt: skip
        model.fit_condition(text.sentences)
        if init:
            model.training_record["init"] = _load_init(model, gan_config, Path(init))
        data = RandomBatches(
            n, lambda idx: (images[idx], *text.batch(idx)), seed=config.seed, device=device
        )
        probe = None
        if options["eval_every"]:
            from t2i_gan.probe import AlignmentProbe

            probe = AlignmentProbe(
                options["eval_prompts"], vectors=vectors, device=device, words=words > 0
            )
        result = self._legs(model, data, config, out, Curves(out), probe, options["eval_every"])
        model.training_record.update(
            steps=result.step, batch_size=config.batch_size, lr=config.lr,
            **config.time_record(device),
        )  # fmt: skip
        return result.save(out / "model")

    def _legs(self, model, data, config: TrainConfig, out: Path, curves, probe, every: int):
        """Run the loop to ``config.steps`` in legs of ``every`` steps, probing after each."""
        step = 0
        while True:
            target = config.steps if not every else min(config.steps, (step // every + 1) * every)
            result = train_loop(model, data, attrs.evolve(config, steps=target), out)
            step = result.step
            for s, metrics in result.metrics:
                curves.add(s, **metrics)
            if probe is not None and result.step > result.first_step:
                ema = result.ema.applied() if result.ema is not None else contextlib.nullcontext()
                with ema:
                    scores = probe(model.netG)
                curves.add(step, **scores)
                log.info("gan.probe", step=step, **scores)
            curves.write()
            if step >= config.steps or result.stopped != "steps":
                return result
