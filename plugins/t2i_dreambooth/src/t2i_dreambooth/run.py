"""One DreamBooth run: build the base recipe, make the class images, train, export.

Layout of ``OUTPUT_DIR``: ``options.json`` (what the run was started with),
``dreambooth.state.pt`` (the core loop's atomic resumable state, every
``--checkpointing-steps``), ``class_images/`` (cached), ``validation/step-NNNNNN.png``
(grids of the validation prompts), ``model/`` (``lora.safetensors`` or
``denoiser.safetensors`` [+ ``text_encoder.safetensors``], and ``dreambooth.json``).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import structlog
import torch

from t2i.engine import Engine
from t2i.files import write_atomically
from t2i.payloads import Image as ImagePayload
from t2i.training import RandomBatches, TrainConfig, train
from t2i_dreambooth.adapters import enable_gradient_checkpointing, prepare
from t2i_dreambooth.data import class_images, load_instance_images
from t2i_dreambooth.model import DreamBoothModel
from t2i_dreambooth.options import (
    DENOISER_TARGETS,
    RESUME_KEYS,
    TEXT_TARGETS,
    DreamBoothOptions,
    DreamBoothOptionsError,
)
from t2i_dreambooth.validation import LiveRegistry, validation_grid

log = structlog.get_logger("t2i_dreambooth")
NAME = "dreambooth"
_WORD = re.compile(r"[A-Za-z0-9]+")


def check_identifier(options: DreamBoothOptions) -> bool:
    """Warn when the instance prompt adds no word to the class prompt (no identifier)."""
    if not options.class_prompt:
        return True
    extra = set(_WORD.findall(options.instance_prompt.lower())) - set(
        _WORD.findall(options.class_prompt.lower())
    )
    if not extra:
        log.warning(
            "instance_prompt_without_identifier",
            instance_prompt=options.instance_prompt,
            class_prompt=options.class_prompt,
            fix="bind the subject to a rare token: 'a sks star' against the class 'a star'",
        )
    return bool(extra)


def _check_resume(options: DreamBoothOptions, out: Path) -> None:
    state, saved = out / f"{NAME}.state.pt", out / "options.json"
    if not state.is_file():
        if options.resume_from_checkpoint:
            log.warning("no_checkpoint_to_resume", state=str(state), note="starting a new run")
        return
    if not options.resume_from_checkpoint:
        raise DreamBoothOptionsError(
            f"{out} already holds a training state ({state.name}): pass "
            "--resume-from-checkpoint latest to continue it, or a new --output-dir "
            "(nothing was changed)"
        )
    before = json.loads(saved.read_text()) if saved.is_file() else {}
    now = options.record()
    changed = [k for k in RESUME_KEYS if k in before and before[k] != now[k]]
    if changed:
        diff = ", ".join(f"{k}: {before[k]!r} -> {now[k]!r}" for k in changed)
        raise DreamBoothOptionsError(
            f"--resume-from-checkpoint with other options than the saved run ({diff}): "
            f"resume with the saved ones ({saved}) or train into a new --output-dir "
            "(the saved state is untouched)"
        )


def loader_nodes(pipe: Any, stage: str | None = None) -> dict[str, str]:
    """The loader node of each component kind that DreamBooth uses: the only one, or the
    first in the graph's order (a cascade's base stage; ``stage`` names another denoiser)."""
    kinds = {"LoadTokenizer": "tokenizer", "LoadTextEncoder": "text_encoder"}
    kinds |= {"LoadDenoiser": "denoiser", "LoadDecoder": "decoder"}
    order = pipe.graph.topological_order()
    found: dict[str, list[str]] = {}
    for nid in order:
        kind = kinds.get(pipe.graph[nid].type)
        if kind:
            found.setdefault(kind, []).append(nid)
    if sorted(found) != sorted(set(kinds.values())):
        raise DreamBoothOptionsError(
            f"recipe {pipe.recipe.name!r} is not a text-to-image diffusion recipe (it lacks a "
            f"{', '.join(sorted(set(kinds.values()) - set(found)))} loader); DreamBooth needs one"
        )
    nodes = {kind: ids[0] for kind, ids in found.items()}
    if stage is not None:
        if stage not in found["denoiser"]:
            raise DreamBoothOptionsError(
                f"--stage {stage!r} is no denoiser of recipe {pipe.recipe.name!r}; its "
                f"denoisers: {', '.join(found['denoiser'])}"
            )
        nodes["denoiser"] = stage
    if len(found["denoiser"]) > 1:
        log.info("dreambooth_stage", denoiser=nodes["denoiser"], of=found["denoiser"])
    return nodes


def _count(pipe: Any, node_type: str) -> int:
    return sum(1 for n in pipe.graph if n.type == node_type)


def _components(pipe: Any, nodes: dict[str, str]) -> dict[str, Any]:
    outs = pipe.executor.run(pipe.graph, outputs=list(nodes.values()))
    found = {kind: next(iter(outs[nid].values())) for kind, nid in nodes.items()}
    if not callable(getattr(found["denoiser"], "loss", None)):
        raise DreamBoothOptionsError(
            f"the denoiser of {pipe.recipe.name!r} has no loss(x0, cond, *, noise, sigma) "
            "(t2i.contracts.TrainableDenoiser): it cannot be fine-tuned"
        )
    if not callable(getattr(found["decoder"], "encode", None)):
        raise DreamBoothOptionsError(
            f"the decoder of {pipe.recipe.name!r} cannot encode images (no encode())"
        )
    return found


def _encode(decoder: Any, pixels: torch.Tensor, device: Any, batch: int = 8) -> torch.Tensor:
    """Pixels in [0, 1] -> the decoder's latents (posterior mode), on ``device``."""
    pixels = pixels.to(device)
    with torch.no_grad():
        parts = [
            decoder.encode(ImagePayload(pixels[i : i + batch])).samples.float()
            for i in range(0, len(pixels), batch)
        ]
    return torch.cat(parts)


def dreambooth(options: DreamBoothOptions) -> Path:
    """Run DreamBooth as ``options`` say; returns the exported ``model/`` folder.

    Raises:
        DreamBoothOptionsError: options that cannot work (before any model work), a run
            folder with a state and no ``--resume-from-checkpoint``, or a resume with other
            options.
        InstanceImagesError: an empty or unreadable instance folder.
    """
    out = Path(options.output_dir)
    _check_resume(options, out)
    check_identifier(options)
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = Engine.build(options.recipe, device=device, **options.recipe_options)
    size = options.resolution or int(pipe.defaults.get("width", 512))
    multiple = pipe.recipe.size_multiple
    if size % multiple:
        raise DreamBoothOptionsError(
            f"--resolution {size} must be a multiple of {multiple} for recipe "
            f"{pipe.recipe.name!r}; try {size - size % multiple or multiple}"
        )
    instance = load_instance_images(options.instance_dir, size)
    out.mkdir(parents=True, exist_ok=True)
    record = options.record()
    write_atomically(out / "options.json", lambda f: f.write(json.dumps(record, indent=1).encode()))
    nodes = loader_nodes(pipe, options.stage)
    parts = _components(pipe, nodes)
    prior = None
    if options.prior_preservation:
        base = {"recipe": pipe.recipe.name, "recipe_options": record["recipe_options"]}
        prior = class_images(
            pipe,
            options.class_folder,
            prompt=options.class_prompt,
            count=options.num_class_images,
            size=size,
            batch_size=options.sample_batch_size,
            seed=options.seed + 10_000,
            record=base,
            # a cascade makes images at its output size; one stage at the training size
            generate_size=None if _count(pipe, "LoadDenoiser") > 1 else size,
        )
    torch.manual_seed(options.seed)  # LoRA's gaussian init draws from torch's generator
    denoiser, text_encoder = copy.deepcopy(parts["denoiser"]), parts["text_encoder"]
    if options.train_text_encoder:
        text_encoder = copy.deepcopy(text_encoder)
    model = _model(options, pipe, parts, denoiser, text_encoder, instance, prior, size)
    model.record["nodes"] = {
        "denoiser": nodes["denoiser"],
        "text_encoder": nodes["text_encoder"] if options.train_text_encoder else None,
    }
    return _train(options, pipe, parts, model, len(instance), 0 if prior is None else len(prior))


def _model(options, pipe, parts, denoiser, text_encoder, instance, prior, size) -> DreamBoothModel:
    trained = [
        prepare(
            "denoiser",
            denoiser,
            lora=options.lora,
            rank=options.rank,
            targets=options.lora_targets,
            default_targets=DENOISER_TARGETS,
        )
    ]
    if options.train_text_encoder:
        trained.append(
            prepare(
                "text_encoder",
                text_encoder,
                lora=options.lora,
                rank=options.rank,
                targets=options.lora_targets,
                default_targets=TEXT_TARGETS,
            )
        )
    if options.gradient_checkpointing:
        taken = enable_gradient_checkpointing(m for p in trained for m in p.modules.values())
        if not taken:
            log.warning("gradient_checkpointing_unsupported", recipe=pipe.recipe.name)
    tokenizer = parts["tokenizer"]
    return DreamBoothModel(
        denoiser=denoiser,
        text_encoder=text_encoder,
        parts=trained,
        instance_latents=_encode(parts["decoder"], instance, pipe.device),
        class_latents=None if prior is None else _encode(parts["decoder"], prior, pipe.device),
        instance_tokens=tokenizer([options.instance_prompt]),
        class_tokens=tokenizer([options.class_prompt]) if options.class_prompt else None,
        lora=options.lora,
        prior_loss_weight=options.prior_loss_weight,
        offset_noise=options.offset_noise,
        snr_gamma=options.snr_gamma,
        record={
            "recipe": pipe.recipe.name,
            "recipe_options": options.record()["recipe_options"],
            "instance_prompt": options.instance_prompt,
            "class_prompt": options.class_prompt,
            "lora": options.lora,
            "rank": options.rank if options.lora else None,
            "resolution": size,
        },
    )


def _train(options, pipe, parts, model, n_instance: int, n_class: int) -> Path:
    out = Path(options.output_dir)
    n = max(n_instance, n_class or 1)
    data = RandomBatches(
        n, lambda idx: (idx % n_instance, idx % max(n_class, 1)), seed=options.seed
    )
    config = TrainConfig(
        name=NAME,
        steps=options.steps,
        batch_size=options.batch_size * options.grad_accum,
        grad_accum=options.grad_accum,
        lr=options.lr,
        weight_decay=1e-2,
        clip_grad=options.max_grad_norm,
        precision=options.loop_precision,
        save_every=options.checkpointing_steps,
        log_every=max(1, min(50, options.steps // 10 or 1)),
        seed=options.seed,
        device=str(pipe.device),
    )
    on_step = None
    if options.validation_prompts:
        live = LiveRegistry(
            pipe.manager.registry,
            {**parts, "denoiser": model.denoiser, "text_encoder": model.text_encoder},
        )

        def on_step(step: int, _model: Any) -> None:
            if step % options.validation_steps == 0 or step == options.steps:
                validation_grid(pipe, live, model, options, step, out / "validation")

    for p in model.trained.parameters():
        p.grad = None
    model.trained.train()
    result = train(model, data, config, out, on_step=on_step)
    model.trained.eval()
    folder = result.save(out / "model")
    log.info("dreambooth_done", model=str(folder), step=result.step, loss=result.loss)
    return folder
