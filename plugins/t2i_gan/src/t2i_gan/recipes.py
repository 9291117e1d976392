"""The ``gan-shapes`` recipe and the generator / decoder factories of the GAN family.

Graph (the core's single-pass shape)::

    LoadTokenizer(gan.minilm_tokenizer) -> Tokenize -> EncodeText(gan.minilm_sentence) ─┐
    LoadDenoiser(gan.generator) ───────────────────────────────> Guide(truncation) ─────┼─>
    EmptyLatent(channels 3, factor 0: batch + seeds) ─────────────────> SampleOnce ──────┘
        -> Decode(gan.pixels) -> IMAGE

The request's ``cfg_scale`` is truncation's ``psi`` (in [0, 1]); ``z`` is clamped to
``[-threshold, threshold]`` first (:data:`TRUNCATION_THRESHOLD`, DF-GAN samples a normal
truncated at 2). Diffusion guidance (``cfg``, ``dynamic`` ...) is refused by the core at
``Engine.build``. A word pooling checkpoint (``model.json``'s ``word_queries`` > 0) gets
``gan.minilm_sentence`` with ``words=True``: the per-token states and mask reach the generator.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).parent / "weights" / "gan-shapes"
"""The shipped ``gan-shapes`` model folder (``model.json``, ``netG.safetensors``): the generator
of H200 run 6 (BENCHMARKS.md); the discriminator stays with the training run."""


def default_weights() -> Path:
    """The shipped model folder, or a :class:`CheckpointError` saying how to get one."""
    from t2i.checkpoints import CheckpointError

    if not (WEIGHTS_DIR / "model.json").is_file():
        raise CheckpointError(
            "gan-shapes ships no trained weights in this install",
            path=WEIGHTS_DIR,
            fix="train one (t2i train gan --out runs/gan) and pass --checkpoint runs/gan/model",
        )
    return WEIGHTS_DIR


TRUNCATION_THRESHOLD = 2.0
DEFAULT_PSI = 1.0
"""Truncation psi of ``gan-shapes`` (the request's guidance scale)."""


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, stamp: tuple, allow_pickle: bool):
    from t2i_gan.checkpoint import load_gan

    return load_gan(path, allow_pickle=allow_pickle)


def load_cached(checkpoint: str | os.PathLike, *, allow_pickle: bool = False):
    """:func:`t2i_gan.checkpoint.load_gan`, read once per file while it is unchanged."""
    from t2i.checkpoints import CheckpointError

    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointError("no such file or folder", path=path, fix="check the path")
    st = (
        (path / "netG.safetensors").stat()
        if path.is_dir() and (path / "netG.safetensors").is_file()
        else path.stat()
    )
    return _load_cached(str(path.resolve()), (st.st_mtime_ns, st.st_size), allow_pickle)


def create_generator(
    *, checkpoint: str | os.PathLike | None = None, allow_pickle: bool = False
) -> Any:
    """Factory of ``gan.generator``: the shipped ``gan-shapes`` generator, a ``t2i train
    gan`` folder, or a DF-GAN ``.pth`` (``allow_pickle=True``). Each pipeline gets its own
    copy of the cached net, so ``Engine.build(dtype=..., device=...)`` moving it leaves the
    cache (and every other pipeline) as loaded."""
    import copy

    from t2i_gan.generator import GanGenerator

    loaded = load_cached(checkpoint or default_weights(), allow_pickle=allow_pickle)
    return GanGenerator(copy.deepcopy(loaded.netG))


def create_decoder() -> Any:
    """Factory of ``gan.pixels``: the identity decoder ([-1, 1] -> [0, 1])."""
    from t2i_gan.generator import PixelDecoder

    return PixelDecoder()


def pools_words(weights: Path) -> bool:
    """Whether the model folder ``weights`` holds a word pooling GAN (``word_queries`` > 0 in
    its ``model.json``); a DF-GAN file never does."""
    import json

    spec = weights / "model.json"
    if not spec.is_file():
        return False
    try:
        config = json.loads(spec.read_text()).get("config") or {}
    except (ValueError, AttributeError):  # not ours: the generator's loader says what it is
        return False
    return isinstance(config, dict) and int(config.get("word_queries") or 0) > 0


def _check_options(checkpoint: Any, threshold: Any) -> None:
    from t2i.engine import EngineError

    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise EngineError(f"recipe 'gan-shapes': checkpoint={checkpoint!r} must be a path")
    if threshold is not None and not (isinstance(threshold, (int, float)) and threshold > 0):
        raise EngineError(
            f"recipe 'gan-shapes': truncation_threshold={threshold!r} must be a number > 0 "
            "(or None: no clamp)"
        )


def gan_shapes_recipe(
    *,
    checkpoint: str | os.PathLike | None = None,
    truncation_threshold: float | None = TRUNCATION_THRESHOLD,
    allow_pickle: bool = False,
):
    """Recipe ``gan-shapes``: the embedded DF-GAN-style model (64x64, one generator pass)."""
    from t2i.files import short_hash
    from t2i.graph import Graph
    from t2i.recipe import Recipe

    _check_options(checkpoint, truncation_threshold)
    options = {} if checkpoint is None else {"checkpoint": str(checkpoint)}
    if allow_pickle:
        options["allow_pickle"] = True
    weights = Path(checkpoint) if checkpoint is not None else default_weights()
    words = {"options": {"words": True}} if pools_words(weights) else {}
    g = Graph(meta={"kind": "single_pass"})
    tok = g.add("tokenizer", "LoadTokenizer", name="gan.minilm_tokenizer")
    enc = g.add("text_encoder", "LoadTextEncoder", name="gan.minilm_sentence", **words)
    t = g.add("tokenize_positive", "Tokenize", tokenizer=tok["tokenizer"], text="")
    c = g.add("encode_positive", "EncodeText", text_encoder=enc["text_encoder"], tokens=t["tokens"])
    model = g.add("denoiser", "LoadDenoiser", name="gan.generator", options=options)
    dec = g.add("decoder", "LoadDecoder", name="gan.pixels")
    empty = g.add("empty", "EmptyLatent", channels=3, factor=0)
    threshold = None if truncation_threshold is None else float(truncation_threshold)
    guide = g.add(
        "guide",
        "Guide",
        model=model["model"],
        positive=c["conditioning"],
        guidance="truncation",
        guidance_options={"threshold": threshold},
        cfg_scale=DEFAULT_PSI,
    )
    s = g.add("sample", "SampleOnce", guided=guide["guided"], latent=empty["latent"])
    g.add("decode", "Decode", decoder=dec["decoder"], samples=s["samples"])
    net_file = weights / "netG.safetensors" if weights.is_dir() else weights
    return Recipe(
        graph=g,
        output=g["decode"]["image"],
        size_multiple=64,
        bindings={
            "prompt": ("tokenize_positive", "text"),
            "seed": ("empty", "seed"),
            "batch_size": ("empty", "batch_size"),
            "cfg_scale": ("guide", "cfg_scale"),
            "guidance": ("guide", "guidance"),
            "sampler": ("sample", "sampler"),
        },
        defaults={
            "width": 64,
            "height": 64,
            "steps": 1,
            "sampler": "single_pass",
            "guidance": "truncation",
            "cfg_scale": DEFAULT_PSI,
        },
        description="DF-GAN-style text-conditional GAN trained on the shapes benchmark (64x64, "
        "one pass)",
        model_name="gan-shapes",
        model_hash=short_hash(net_file) if net_file.is_file() else "",
        infotext={"Truncation threshold": threshold},
    )
