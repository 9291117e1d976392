"""The ``dalle-shapes`` recipe and the component factories of a DALL-E model folder.

Graph (the core's autoregressive shape)::

    LoadTokenizer(dalle.words) -> Tokenize(prompt / "") -> EncodeText(dalle.text) ─┐
    LoadDenoiser(dalle.transformer) ─────────────> Guide(supercondition, cfg_scale) ┼─>
    Dalle.Grid64 (batch + seeds) ───────────────────────────────> SampleTokens ─────┘
        -> Decode(dalle.dvae) -> IMAGE

img2img (DALL-E's image-prompt completion): ``LoadImage -> EncodeImage(dalle.dvae) ->
Dalle.PrimeTokens(rows)`` between ``Guide`` and ``SampleTokens``: the init image's top token
rows are kept, the rest is drawn. Every component takes ``checkpoint=`` (a model folder);
without it, the shipped ``dalle-shapes`` folder.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).parent / "weights" / "dalle-shapes"
"""The shipped ``dalle-shapes`` model folder (dalle.json, dvae / transformer safetensors)."""

DEFAULTS = {"cfg_scale": 3.0, "temperature": 1.0, "top_k": 64}
"""Sampling of ``dalle-shapes``: super-conditioning scale, temperature, top-k."""

INFOTEXT = {"temperature": "Temperature", "top_k": "Top-k", "top_p": "Top-p"}  # as t2i.xyz
"""The token sampler's settings as the PNG infotext records them (``Recipe.infotext_fields``)."""


def default_weights() -> Path:
    """The shipped model folder, or a :class:`CheckpointError` saying how to get one."""
    from t2i.checkpoints import CheckpointError

    names = ("dalle.json", "dvae.safetensors", "transformer.safetensors")
    if not all((WEIGHTS_DIR / n).is_file() for n in names):
        raise CheckpointError(
            "dalle-shapes ships no trained weights in this install",
            path=WEIGHTS_DIR,
            fix="train one (t2i train dalle --stage vae, then --stage prior) and pass "
            "--option checkpoint=RUN/model",
        )
    return WEIGHTS_DIR


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, stamp: tuple):
    from t2i_dalle.checkpoint import load_dalle

    return load_dalle(path)


def load_cached(checkpoint: str | os.PathLike | None):
    """:func:`t2i_dalle.checkpoint.load_dalle`, read once per folder while it is unchanged."""
    from t2i_dalle.checkpoint import SPEC_FILE, TRANSFORMER_FILE, check_folder

    path = check_folder(checkpoint or default_weights())
    stamps = tuple(
        (f.stat().st_mtime_ns, f.stat().st_size)
        for f in (path / SPEC_FILE, path / TRANSFORMER_FILE)
        if f.is_file()
    )
    return _load_cached(str(path.resolve()), stamps)


def create_tokenizer(*, checkpoint: str | os.PathLike | None = None) -> Any:
    """Factory of ``dalle.words``: the folder's word tokenizer (its text context)."""
    from t2i_dalle.text import WordTokenizer

    m = load_cached(checkpoint)
    return WordTokenizer(m.words, m.transformer.config.text_len)


def create_text_encoder(*, checkpoint: str | os.PathLike | None = None) -> Any:
    """Factory of ``dalle.text``: the transformer's text embedding."""
    from t2i_dalle.components import DalleTextEncoder

    return DalleTextEncoder(load_cached(checkpoint).transformer)


def create_predictor(*, checkpoint: str | os.PathLike | None = None) -> Any:
    """Factory of ``dalle.transformer``: the KV-cached token predictor."""
    from t2i_dalle.components import DalleTokenPredictor

    return DalleTokenPredictor(load_cached(checkpoint).transformer)


def create_decoder(*, checkpoint: str | os.PathLike | None = None) -> Any:
    """Factory of ``dalle.dvae``: the dVAE (tokens <-> 64 px images)."""
    from t2i_dalle.components import DVAETokenDecoder

    m = load_cached(checkpoint)
    return DVAETokenDecoder(m.encoder, m.decoder, grid=m.transformer.config.grid)


def _check_options(checkpoint: Any, prime_rows: Any) -> None:
    from t2i.engine import EngineError

    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise EngineError(f"recipe 'dalle-shapes': checkpoint={checkpoint!r} must be a path")
    if not (isinstance(prime_rows, int) and prime_rows >= 1):
        raise EngineError(f"recipe 'dalle-shapes': prime_rows={prime_rows!r} must be an int >= 1")


def _graph(options: dict, img2img: bool, prime_rows: int):
    from t2i.graph import Graph

    g = Graph(meta={"kind": "autoregressive", "img2img": img2img})
    tok = g.add("tokenizer", "LoadTokenizer", name="dalle.words", options=options)
    enc = g.add("text_encoder", "LoadTextEncoder", name="dalle.text", options=options)
    model = g.add("denoiser", "LoadDenoiser", name="dalle.transformer", options=options)
    dec = g.add("decoder", "LoadDecoder", name="dalle.dvae", options=options)
    cond = {}
    for side in ("positive", "negative"):
        t = g.add(f"tokenize_{side}", "Tokenize", tokenizer=tok["tokenizer"], text="")
        c = g.add(f"encode_{side}", "EncodeText", text_encoder=enc["text_encoder"],
                  tokens=t["tokens"])  # fmt: skip
        cond[side] = c["conditioning"]
    grid = g.add("grid", "Dalle.Grid64")
    guide = g.add(
        "guide", "Guide", model=model["model"], positive=cond["positive"],
        negative=cond["negative"], guidance="supercondition", cfg_scale=DEFAULTS["cfg_scale"],
    )  # fmt: skip
    guided = guide["guided"]
    if img2img:
        img = g.add("init_image", "LoadImage", image=None, width=64, height=64)
        init = g.add("encode_image", "EncodeImage", decoder=dec["decoder"], image=img["image"])
        guided = g.add("prime", "Dalle.PrimeTokens", guided=guided, init=init["latent"],
                       rows=prime_rows)["guided"]  # fmt: skip
    s = g.add("sample", "SampleTokens", guided=guided, latent=grid["latent"],
              top_k=DEFAULTS["top_k"], temperature=DEFAULTS["temperature"])  # fmt: skip
    g.add("decode", "Decode", decoder=dec["decoder"], samples=s["samples"])
    return g


BINDINGS = {
    "prompt": ("tokenize_positive", "text"),
    "negative_prompt": ("tokenize_negative", "text"),
    "width": ("grid", "width"),
    "height": ("grid", "height"),
    "seed": ("grid", "seed"),
    "batch_size": ("grid", "batch_size"),
    "cfg_scale": ("guide", "cfg_scale"),
    "guidance": ("guide", "guidance"),
    "sampler": ("sample", "sampler"),
    "temperature": ("sample", "temperature"),
    "top_k": ("sample", "top_k"),
    "top_p": ("sample", "top_p"),
}


def dalle_shapes_recipe(*, checkpoint: str | os.PathLike | None = None, prime_rows: int = 7):
    """Recipe ``dalle-shapes``: the embedded DALL-E (dVAE 64 px -> 16x16 tokens, transformer)."""
    from t2i.files import short_hash
    from t2i.recipe import Recipe
    from t2i_dalle.checkpoint import TRANSFORMER_FILE, check_folder

    _check_options(checkpoint, prime_rows)
    if checkpoint is not None:
        check_folder(checkpoint)  # a VQGAN / min-dalle / missing path: refused at build
    options = {} if checkpoint is None else {"checkpoint": str(checkpoint)}
    folder = Path(checkpoint) if checkpoint is not None else default_weights()
    weights = folder / TRANSFORMER_FILE
    img2img_bindings = {
        **BINDINGS,
        "init_image": ("init_image", "image"),
        "prime_rows": ("prime", "rows"),
    }
    graph = _graph(options, False, prime_rows)
    return Recipe(
        graph=graph,
        output=graph["decode"]["image"],
        bindings=BINDINGS,
        img2img_graph=_graph(options, True, prime_rows),
        img2img_bindings=img2img_bindings,
        size_multiple=64,
        defaults={
            "width": 64,
            "height": 64,
            "steps": 1,
            "sampler": "top_k",
            "guidance": "supercondition",
            **DEFAULTS,
        },
        description="DALL-E (dVAE + autoregressive transformer) trained on the shapes benchmark "
        "(64x64, 16x16 tokens)",
        model_name="dalle-shapes",
        model_hash=short_hash(weights) if weights.is_file() else "",
        infotext_fields=INFOTEXT,
    )
