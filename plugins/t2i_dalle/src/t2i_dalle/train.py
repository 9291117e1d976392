"""``t2i train dalle``: the two stages of DALL-E on the core loop (Ramesh et al. 2021).

``--stage vae`` trains the dVAE on shapes renders (Gumbel-softmax, KL to the uniform prior,
logit-Laplace likelihood: :class:`t2i_dalle.trainables.DVAETrainable`) and writes
``OUT/model/`` (``dvae.safetensors`` + ``dalle.json``). ``--stage prior --dvae FOLDER`` encodes
the renders to argmax tokens with that dVAE and trains the transformer on
``[caption words | image tokens]``; it writes the full model folder ``OUT/model/``, which
``--recipe dalle-shapes --option checkpoint=OUT/model`` runs. Both resume from
``OUT/dalle-STAGE.state.pt`` after a kill (the loop's state, the schedule's step counter).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
import structlog
import torch

from t2i.training import RandomBatches, TrainConfig, Trainer, TrainerOption, TrainOptionsError
from t2i.training import train as train_loop

log = structlog.get_logger("t2i_dalle.train")

TINY = {"n_hid": 8, "codebook": 16, "width": 32, "depth": 2, "heads": 2}
"""``--tiny``: a tiny dVAE / transformer on at most 64 renders (tests, CPU smoke runs)."""


def _device(config: TrainConfig) -> torch.device:
    if config.device:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check(o: dict[str, Any]) -> None:
    rules = (
        (o["stage"] in ("vae", "prior"), f"--stage must be vae or prior, got {o['stage']!r}"),
        (o["images"] >= 2, f"--images must be >= 2, got {o['images']}"),
        (
            o["stage"] != "prior" or o["dvae"] or o["init"],
            "--stage prior needs --dvae FOLDER (a vae run) or --init FOLDER (a prior run)",
        ),
        (o["stage"] == "prior" or not o["init"], "--init continues a --stage prior run only"),
        (o["groups"] >= 1, f"--groups must be >= 1, got {o['groups']}"),
        (o["codebook"] >= 2, f"--codebook must be >= 2, got {o['codebook']}"),
        (0 <= o["uncond_prob"] < 1, f"--uncond-prob must be in [0, 1), got {o['uncond_prob']}"),
        (o["workers"] >= 1, f"--workers must be >= 1, got {o['workers']}"),
    )
    for ok, message in rules:
        if not ok:
            raise TrainOptionsError(message)


class DalleTrainer(Trainer):
    """Train dalle-shapes: --stage vae (the dVAE), then --stage prior (the transformer).

    Writes OUT/dalle-STAGE.state.pt (resumable) and OUT/model/ (dalle.json, dvae.safetensors
    and, after the prior stage, transformer.safetensors), which `--recipe dalle-shapes
    --option checkpoint=OUT/model` runs.
    """

    options = (
        TrainerOption("--stage", str, "vae", help="vae (the dVAE) or prior (the transformer)."),
        TrainerOption("--dvae", str, help="--stage prior: the model folder of a vae run."),
        TrainerOption(
            "--init",
            str,
            help="--stage prior: continue from a full model folder's transformer (same config; "
            "its dVAE is used unless --dvae is given); the optimiser starts fresh.",
        ),
        TrainerOption("--images", int, 40_000, help="Benchmark renders to train on."),
        TrainerOption("--pair-fraction", float, 0.6, help="Share of two-object scenes."),
        TrainerOption("--workers", int, min(6, os.cpu_count() or 1), help="Render processes."),
        TrainerOption("--groups", int, 3, help="dVAE groups (grid = 64 / 2**(groups-1))."),
        TrainerOption("--n-hid", int, 64, help="dVAE width of the first group."),
        TrainerOption("--codebook", int, 512, help="dVAE codebook size (image vocabulary)."),
        TrainerOption("--anneal-steps", int, 2000, help="Gumbel temperature 1 -> 1/16 over these."),
        TrainerOption("--anneal-seconds", float, help="Also end the anneal after this long."),
        TrainerOption("--renders", str, help="Cache file of the renders (made if missing)."),
        TrainerOption(
            "--kl-weight", float, 6.6, help="Final weight of the KL to the uniform prior."
        ),
        TrainerOption("--kl-warmup", int, 500, help="Steps over which the KL weight rises."),
        TrainerOption(
            "--diversity-weight",
            float,
            0.0,
            help="Weight of the codebook-use term (against collapse onto a few codes).",
        ),
        TrainerOption("--width", int, 256, help="Transformer width."),
        TrainerOption("--depth", int, 8, help="Transformer layers."),
        TrainerOption("--heads", int, 4, help="Attention heads."),
        TrainerOption(
            "--attn", str, "full", help="Comma list cycled over layers: full,row,column,conv."
        ),
        TrainerOption("--text-len", int, 24, help="Text positions (<bos> words <eos> <pad>...)."),
        TrainerOption("--uncond-prob", float, 0.1, help="Share of empty captions (guidance)."),
        TrainerOption("--tiny", is_flag=True, help="Tiny models on 64 renders (tests, CPU)."),
    )
    defaults: ClassVar[dict[str, Any]] = {
        "steps": 3000,
        "batch_size": 128,
        "lr": 1e-3,
        "save_every": 500,
        "log_every": 50,
    }

    def run(self, config: TrainConfig, out: Path, **options: Any) -> Path:
        if options.pop("tiny"):
            options.update(TINY, images=min(options["images"], 64))
        _check(options)
        device, out = _device(config), Path(out)
        torch.manual_seed(config.seed)
        t0 = time.time()
        images, captions = _renders(options)
        log.info("dalle.data", images=len(captions), seconds=round(time.time() - t0, 1))
        # gradient clipping at 1 (both stages); AdamW decay 0.01 on the transformer
        decay = 0.01 if options["stage"] == "prior" else 0.0
        config = attrs.evolve(
            config, name=f"dalle-{options['stage']}", clip_grad=config.clip_grad or 1.0,
            weight_decay=config.weight_decay or decay,
        )  # fmt: skip
        if options["stage"] == "vae":
            return self._vae(config, out, images, device, options)
        return self._prior(config, out, images, captions, device, options)

    def _vae(self, config, out: Path, images, device, o) -> Path:
        from t2i_dalle.dvae import DVAEConfig
        from t2i_dalle.text import caption_words
        from t2i_dalle.trainables import DVAESchedule, DVAETrainable

        dconfig = DVAEConfig(
            group_count=o["groups"], n_hid=o["n_hid"], n_blk_per_group=2,
            n_init=2 * o["n_hid"], vocab_size=o["codebook"],
        )  # fmt: skip
        schedule = DVAESchedule(
            1 / 16,
            o["anneal_steps"],
            o["kl_weight"],
            o["kl_warmup"],
            o["anneal_seconds"],
            o["diversity_weight"],
        )
        record = {"words": caption_words(), **{k: o[k] for k in ("images", "pair_fraction")}}
        model = DVAETrainable(dconfig, schedule, training=record)
        images = images.to(device)
        data = RandomBatches(len(images), lambda idx: images[idx], seed=config.seed, device=device)
        result = train_loop(model, data, config, out)
        with result.ema.applied() if result.ema is not None else _null():
            model.eval()
            err = model.reconstruction_error(images[:512])
            codes = int(torch.unique(model.encoder.tokens(images[:2048].float() / 255)).numel())
        model.training_record.update(
            steps=result.step, batch_size=config.batch_size, lr=config.lr,
            final_loss=result.loss, reconstruction_l1=round(err, 4), codes_used=codes,
            schedule=attrs.asdict(schedule), **config.time_record(device),
        )  # fmt: skip
        log.info(
            "dalle.vae", steps=result.step, loss=result.loss, reconstruction_l1=err,
            codes_used=codes,
        )  # fmt: skip
        return result.save(out / "model")

    def _prior(self, config, out: Path, images, captions, device, o) -> Path:
        import json

        from t2i_dalle.checkpoint import DVAE_FILE, SPEC_FILE, load_dalle
        from t2i_dalle.data import encode_tokens
        from t2i_dalle.text import PAD, WordTokenizer
        from t2i_dalle.trainables import PriorTrainable
        from t2i_dalle.transformer import DalleTransformer, TransformerConfig

        folder = Path(o["dvae"] or o["init"])
        loaded = load_dalle(folder, need_transformer=False)
        tokens = encode_tokens(loaded.encoder.to(device), images)
        grid = images.shape[-1] // loaded.encoder.config.factor
        tok = WordTokenizer(loaded.words, o["text_len"])
        text = tok.ids(captions).to(device)
        used = int(torch.unique(tokens).numel())
        log.info(
            "dalle.tokens", grid=grid, codes_used=used, codebook=loaded.encoder.config.vocab_size
        )
        tconfig = TransformerConfig(
            text_vocab=tok.vocab_size, text_len=o["text_len"],
            image_vocab=loaded.encoder.config.vocab_size, grid=grid, width=o["width"],
            depth=o["depth"], heads=o["heads"], attn_types=tuple(o["attn"].split(",")),
        )  # fmt: skip
        spec = json.loads((folder / SPEC_FILE).read_text())
        spec["training"] = {
            **spec.get("training", {}),
            "prior": {"images": o["images"], "pair_fraction": o["pair_fraction"],
                      "codes_used": used, "uncond_prob": o["uncond_prob"]},
        }  # fmt: skip
        transformer = DalleTransformer(tconfig)
        if o["init"]:
            spec["training"]["prior"]["init"] = _load_init(transformer, Path(o["init"]))
        model = PriorTrainable(
            transformer, uncond_ids=tok.ids([""])[0], uncond_prob=o["uncond_prob"],
            pad=PAD, folder_spec=spec, dvae_file=folder / DVAE_FILE,
        )  # fmt: skip
        data = RandomBatches(
            len(text), lambda idx: (text[idx], tokens[idx]), seed=config.seed, device=device
        )
        result = train_loop(model, data, config, out)
        model.folder_spec["training"]["prior"].update(
            steps=result.step, batch_size=config.batch_size, lr=config.lr,
            final_loss=result.loss, **config.time_record(device),
        )  # fmt: skip
        log.info("dalle.prior", steps=result.step, loss=result.loss)
        return result.save(out / "model")


def _load_init(transformer, folder: Path) -> dict[str, Any]:
    """Copy a model folder's transformer into ``transformer`` (``--init``)."""
    from t2i_dalle.checkpoint import load_dalle

    loaded = load_dalle(folder)
    if loaded.transformer.config != transformer.config:
        raise TrainOptionsError(
            f"--init {folder}: its transformer {attrs.asdict(loaded.transformer.config)} differs "
            f"from this run's {attrs.asdict(transformer.config)}; pass the same --width / "
            "--depth / --heads / --text-len / --attn and its dVAE"
        )
    transformer.load_state_dict(loaded.transformer.state_dict())
    prior = loaded.spec.get("training", {}).get("prior", {})
    log.info("dalle.init", folder=str(folder), steps=prior.get("steps"))
    # the earlier run's record rides along, so the training compute of a chain of runs adds up
    return {"folder": str(folder), "steps": prior.get("steps"), "training": prior}


def _renders(o: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    """The renders, read from / written to ``--renders`` when given (both stages share it)."""
    from t2i_dalle.data import render_items

    key = {"images": o["images"], "pair_fraction": o["pair_fraction"]}
    cache = Path(o["renders"]) if o["renders"] else None
    if cache is not None and cache.is_file():
        stored = torch.load(cache, weights_only=True)
        if stored["key"] == key:
            return stored["images"], list(stored["captions"])
    images, captions = render_items(
        o["images"], 64, pair_fraction=o["pair_fraction"], workers=o["workers"]
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "images": images, "captions": captions}, cache)
    return images, captions


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
