"""``t2i train imagen``: train one stage of the imagen-shapes cascade on the core's loop.

``--stage base`` trains the 32 px base model, ``--stage sr`` the 32 -> 64 px super-resolution
model (noise-conditioning augmentation, :mod:`t2i_imagen.trainables`); the two are
independent, so they can train at the same time (two processes, one GPU). Both condition on
the frozen MiniLM's token states, mask and sentence vector, encoded once for the whole data
set. Resumable from ``OUT/<stage>.state.pt`` (the core loop); the export is
``OUT/model/<stage>.safetensors`` (fp16, config in the metadata), the files the
``imagen-shapes`` recipe reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs
import click
import structlog
import torch
import torch.nn.functional as F

from t2i.training import (
    TrainConfig,
    Trainer,
    TrainerOption,
    TrainOptionsError,
    setup_distributed,
    train,
)
from t2i.training.cli import trainer_command
from t2i.training.precision import allow_tf32

log = structlog.get_logger("t2i_imagen.train")


def _check(options: dict[str, Any]) -> None:
    if options["stage"] not in ("base", "sr"):
        raise TrainOptionsError(f"--stage must be base or sr, got {options['stage']!r}")
    if options["n"] < 1:
        raise TrainOptionsError(f"--images must be >= 1, got {options['n']}")
    if options["size"] % 16:
        raise TrainOptionsError(f"--size must be a multiple of 16, got {options['size']}")


def _text(options: dict[str, Any], captions: list[str], device: torch.device):
    from t2i.text.minilm import MiniLmEncoder, MiniLmTokenizer
    from t2i_imagen.data import encode_captions

    tokenizer = MiniLmTokenizer(options["minilm"])
    encoder = MiniLmEncoder(options["minilm"]).to(device)
    text = encode_captions(encoder, tokenizer, captions, device)
    del encoder
    return text


def _record(config: TrainConfig, result, ctx, **facts: Any) -> dict[str, Any]:
    return {
        **facts,
        "steps": result.step,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "ema_decay": config.ema_decay,
        "warmup": config.warmup,
        "cooldown": config.cooldown,
        "precision": config.precision,
        "final_loss": result.loss,
        **config.time_record(ctx.device),
    }


def _initial_unet(options: dict[str, Any], stage: str, text_dim: int):
    """A fresh preset network, or the ``--init`` folder's stage (its own architecture)."""
    from t2i_imagen.efficient_unet import EfficientUNet
    from t2i_imagen.presets import stage_config

    if options["init"] is None:
        return EfficientUNet(stage_config(stage, tiny=options["tiny"], text_dim=text_dim))
    from t2i_imagen.shapes_model import load_stage

    loaded = load_stage(options["init"], stage)
    if loaded.unet.config.text_dim != text_dim:
        raise TrainOptionsError(
            f"--init {options['init']}: its {stage} stage reads text {loaded.unet.config.text_dim}"
            f" wide, the encoder gives {text_dim}: use a model trained on the same encoder"
        )
    unet = EfficientUNet(loaded.unet.config)
    unet.load_state_dict(loaded.unet.state_dict())
    return unet.train().requires_grad_(True)


def train_imagen(config: TrainConfig, out: str | Path, **options: Any) -> Path:
    """Train (or resume) one stage into ``out``; returns the exported model folder."""
    from t2i.training import RandomBatches
    from t2i_imagen.data import load_or_render
    from t2i_imagen.presets import SR_FACTOR
    from t2i_imagen.trainables import StageTraining

    options = {**{o.keyword: o.default for o in ImagenTrainer.options}, **options}
    _check(options)
    out, stage = Path(out), options["stage"]
    out.mkdir(parents=True, exist_ok=True)
    ctx = setup_distributed(config.device)
    try:
        dev = ctx.device
        torch.manual_seed(config.seed)
        allow_tf32(dev)
        images, captions, pairs = load_or_render(
            options["data"],
            options["n"],
            options["size"],
            seed=config.seed,
            workers=options["workers"] or 1,
            pair_fraction=options["pair_fraction"],
        )
        text = _text(options, captions, dev)
        size = options["size"] if stage == "sr" else options["size"] // SR_FACTOR
        gpu = images.to(dev)
        if stage == "base":  # area-downsampled, as the SR stage's training input is
            gpu = F.avg_pool2d(gpu.float(), SR_FACTOR).round().to(torch.uint8)
        log.info("data", stage=stage, images=len(captions), size=size, tokens=text.states.shape[1])
        unet = _initial_unet(options, stage, int(text.states.shape[-1])).to(dev)
        model = StageTraining(unet, text, stage=stage, factor=SR_FACTOR)
        data = RandomBatches(
            len(captions), lambda idx: (gpu[idx], idx), seed=config.seed + 1, device=dev
        )
        run = attrs.evolve(config, name=stage, clip_grad=1.0)
        result = train(model, data, run, out, ctx=ctx)
        params = sum(p.numel() for p in unet.parameters())
        model.record = _record(
            run, result, ctx, stage=stage, size=size, images=len(captions), parameters=params,
            pair_fraction=pairs, text_encoder="minilm", data_seed=config.seed,
            init=None if options["init"] is None else str(options["init"]),
        )  # fmt: skip
        folder = result.save(out / "model")
        log.info("exported", folder=str(folder), **model.record)
        ctx.barrier()
        return folder
    finally:
        ctx.close()


class ImagenTrainer(Trainer):
    """Train one stage of imagen-shapes (base 32 px, or SR 32 -> 64 px) on frozen MiniLM.

    Resumes from OUT/<stage>.state.pt. Run --stage base and --stage sr (same --data file)
    to get both halves of the cascade; point the imagen-shapes recipe's checkpoint at a
    folder holding both base.safetensors and sr.safetensors.
    """

    options = (
        TrainerOption("--stage", click.Choice(["base", "sr"]), "base", help="Cascade stage."),
        TrainerOption(
            "--data",
            click.Path(dir_okay=False),
            help="A .pt render cache: read when present, written when not (shared by stages).",
        ),
        TrainerOption("--images", int, 100_000, dest="n", help="Images to render."),
        TrainerOption("--size", int, 64, help="SR output size (the base trains at size / 2)."),
        TrainerOption("--workers", int, help="Render processes."),
        TrainerOption("--pair-fraction", click.FloatRange(0.0, 1.0), 0.5),
        TrainerOption(
            "--minilm",
            click.Path(exists=True, file_okay=False),
            help="MiniLM folder (default: $T2I_MINILM_PATH, then the installed package).",
        ),
        TrainerOption("--tiny", is_flag=True, help="Tiny models (tests)."),
        TrainerOption(
            "--init",
            click.Path(exists=True, file_okay=False),
            help="Continue from a model folder's stage (base.safetensors / sr.safetensors).",
        ),
    )
    defaults: ClassVar[dict[str, Any]] = {
        "steps": 20_000,
        "batch_size": 256,
        "lr": 3e-4,
        "warmup": 200,
        "ema_decay": 0.999,
        "save_every": 1000,
    }
    loop_help: ClassVar[dict[str, str]] = {
        "out": "Run folder: <stage>.state.pt (resumable) and model/<stage>.safetensors.",
    }

    def run(self, config: TrainConfig, out: Path, **options: Any) -> Path:
        return train_imagen(config, out, **options)


train_command = trainer_command("imagen", ImagenTrainer())
"""The ``t2i train imagen`` command (for tests and embedding applications)."""
