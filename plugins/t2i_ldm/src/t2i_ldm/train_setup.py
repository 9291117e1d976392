"""The named steps of ``t2i train ldm`` before and between its two training stages.

:func:`plan_run` checks the options (before any work), :func:`load_data` renders or reads
the images, :func:`prepare_tokenizer` writes the vocabulary and :func:`caption_ids` tokenizes
every caption once, :func:`build_models` makes the three models (from scratch or
``--init``), and :func:`encode_dataset` turns the images into latents once the autoencoder
is trained.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from t2i.training import TrainOptionsError


@attrs.frozen
class LdmPlan:
    """What a run trains, decided from the options before any data or model work.

    Attributes:
        spec: the ``--init`` model's ``model.json`` (None: from scratch).
        init: the ``--init`` folder.
        kind: ``"clip"`` or ``"minilm"``.
        unet_config: the UNet as built (and loaded from ``--init``).
        trained_config: the UNet as trained (an ``--init`` UNet may gain context pooling).
        minilm_dir: MiniLM's folder (``kind == "minilm"``).
        tiny: tiny models (tests).
    """

    spec: Any
    init: Path | None
    kind: str
    unet_config: Any
    trained_config: Any
    minilm_dir: Path | None
    tiny: bool

    @property
    def keep_text(self) -> bool:
        """Whether the ``--init`` model's text side is fine-tuned too (same kind)."""
        return self.spec is not None and self.spec.text_kind == self.kind


def _text_kind(requested: str | None, spec: Any, init: Path | None) -> str:
    """The text encoder a run trains with: the request, else the --init model's, else CLIP."""
    init_kind = None if spec is None else spec.text_kind
    kind = requested or init_kind or "clip"
    if kind not in ("clip", "minilm"):
        raise TrainOptionsError(f"--text-encoder must be 'clip' or 'minilm', got {kind!r}")
    if init_kind == "minilm" and kind == "clip":
        raise TrainOptionsError(
            f"{init} conditions on MiniLM: fine-tune it with --text-encoder minilm, or train a "
            "CLIP-conditioned model without --init"
        )
    return kind


def _unet_configs(spec: Any, tiny: bool, context_pooling: int | None) -> tuple[Any, Any]:
    """The UNet config as built and as trained."""
    from t2i_ldm import shapes_model as sm

    built = spec.unet_config() if spec is not None else sm.TINY_UNET if tiny else sm.UNET
    if context_pooling is None:
        return built, built
    if spec is not None and built.context_pooling_heads not in (0, context_pooling):
        raise TrainOptionsError(
            f"the --init model pools its context with {built.context_pooling_heads} "
            f"heads; --context-pooling {context_pooling} cannot change that (leave it out)"
        )
    try:
        trained = attrs.evolve(built, context_pooling_heads=context_pooling)
    except ValueError as error:
        raise TrainOptionsError(f"--context-pooling: {error}") from error
    return (built if spec is not None else trained), trained


def plan_run(
    *,
    init: str | os.PathLike | None,
    text_encoder: str | None,
    minilm: str | os.PathLike | None,
    context_pooling: int | None,
    tiny: bool,
) -> LdmPlan:
    """Check the options and decide what to build; raises :class:`TrainOptionsError`."""
    from t2i_ldm import shapes_model as sm
    from t2i_ldm.minilm import MiniLmNotFoundError, find_minilm

    init = None if init is None else Path(init)
    spec = sm.ShapesModelSpec.read(init) if init is not None else None
    kind = _text_kind(text_encoder, spec, init)
    built, trained = _unet_configs(spec, tiny, context_pooling)
    try:
        minilm_dir = find_minilm(minilm) if kind == "minilm" else None
    except MiniLmNotFoundError as error:
        raise TrainOptionsError(str(error)) from error
    return LdmPlan(spec, init, kind, built, trained, minilm_dir, tiny)


def load_data(
    data: str, *, n: int, size: int, seed: int, workers: int | None, pair_fraction: float, ctx
) -> tuple[torch.Tensor, list[str]]:
    """``(N, 3, H, W)`` uint8 images and their captions: rendered (the same on every rank)
    or read from a folder of ``t2i data shapes``."""
    from t2i_ldm.shapes_data import load_folder, render_shapes

    if data != "shapes":
        return load_folder(Path(data))
    if workers is None and ctx.distributed:
        workers = max(1, min(16, (os.cpu_count() or 1) // ctx.world_size))
    return render_shapes(
        n, size, seed=seed, workers=workers, progress=ctx.is_main, pair_fraction=pair_fraction
    )


def prepare_tokenizer(tok_dir: Path, plan: LdmPlan, captions: list[str], ctx) -> Any:
    """Rank 0 fills ``tok_dir`` (the --init model's files, MiniLM's, or a new BPE vocabulary
    of the captions); every rank then loads the tokenizer from it."""
    from t2i_ldm import shapes_model as sm
    from t2i_ldm.minilm import TOKENIZER_FILES, minilm_tokenizer

    if ctx.is_main:
        if plan.keep_text:
            shutil.copytree(plan.init / "tokenizer", tok_dir, dirs_exist_ok=True)
        elif plan.kind == "minilm":
            tok_dir.mkdir(parents=True, exist_ok=True)
            for name in TOKENIZER_FILES:
                if (plan.minilm_dir / name).is_file():
                    shutil.copy2(plan.minilm_dir / name, tok_dir / name)
        else:
            sm.write_tokenizer(tok_dir, captions)
    ctx.barrier()
    return minilm_tokenizer(tok_dir) if plan.kind == "minilm" else sm.load_tokenizer(tok_dir)


def caption_ids(tokenizer: Any, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """First 77 token ids of every caption ``(N, 77)`` and of the empty prompt ``(1, 77)``."""
    unique = sorted(set(captions))
    ids_of = {}
    for i in range(0, len(unique), 4096):
        part = unique[i : i + 4096]
        ids_of.update(zip(part, tokenizer(part).ids[:, :77]))
    return torch.stack([ids_of[c] for c in captions]), tokenizer([""]).ids[:, :77]


@attrs.define(eq=False)
class LdmModels:
    """The three models of a run and the configs the model folder records."""

    vae: nn.Module
    unet: nn.Module
    text_model: nn.Module
    vae_config: Any
    unet_config: Any


def _text_model(plan: LdmPlan, vocab_size: int) -> tuple[nn.Module, tuple[nn.Module, str]]:
    """The text side (CLIP, or frozen MiniLM + adapter) and (its trained module, file)."""
    from transformers import CLIPTextModel

    from t2i_ldm import shapes_model as sm
    from t2i_ldm.minilm import MiniLmConditioner

    if plan.kind == "minilm":  # frozen MiniLM; the adapter maps it to the UNet's width
        model = MiniLmConditioner.from_folder(plan.minilm_dir, plan.unet_config.context_dim)
        return model, (model.adapter, sm.ADAPTER_FILE)
    config = sm.text_config(vocab_size, tiny=plan.tiny)
    if plan.keep_text:
        config = plan.spec.text_config()
    model = CLIPTextModel(config)
    return model, (model, "text_encoder.safetensors")


def build_models(plan: LdmPlan, vocab_size: int, device: torch.device) -> LdmModels:
    """The VAE, UNet and text model: fresh (seeded by the caller) or the ``--init`` weights."""
    from t2i.checkpoints import load_into, open_checkpoint
    from t2i_ldm import shapes_model as sm
    from t2i_ldm.unet import ContextPooling, UNetModel
    from t2i_ldm.vae import AutoencoderKL

    vae_config = sm.TINY_VAE if plan.tiny else sm.VAE
    if plan.spec is not None:
        vae_config = plan.spec.vae_config()
    vae, unet = AutoencoderKL(vae_config), UNetModel(plan.unet_config)
    text_model, text_part = _text_model(plan, vocab_size)
    if plan.spec is not None:
        parts = [(vae, "vae.safetensors"), (unet, "unet.safetensors")]
        for module, name in parts + ([text_part] if plan.keep_text else []):
            what = name.removesuffix(".safetensors")
            load_into(module, open_checkpoint(plan.init / name), dtype=torch.float32, what=what)
    unet_config = plan.unet_config
    if plan.trained_config != unet_config:  # the --init UNet gains the pooling, zero-
        # initialised: its predictions are unchanged until training moves the pooling
        unet_config = unet.config = plan.trained_config
        heads = unet_config.context_pooling_heads
        unet.context_pool = ContextPooling(
            unet_config.context_dim, heads, unet_config.time_embed_dim
        )
    width = getattr(getattr(text_model, "adapter", None), "out_features", None)
    width = width or text_model.config.hidden_size
    if unet_config.context_dim != width:
        raise ValueError("UNet context_dim must equal the text width")
    models = LdmModels(vae, unet, text_model, vae_config, unet_config)
    for module in (vae, unet, text_model):
        module.to(device)
    return models


def encode_dataset(
    vae: nn.Module, pixels: Callable[[torch.Tensor], torch.Tensor], n: int, device
) -> torch.Tensor:
    """Posterior modes of every image ``(N, z, h, w)``, in chunks of 1024."""
    latents = []
    with torch.no_grad():
        for i in range(0, n, 1024):
            idx = torch.arange(i, min(n, i + 1024), device=device)
            latents.append(vae.encode(pixels(idx)).mode().float())
    return torch.cat(latents)
