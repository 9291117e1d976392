"""The ``dalle-mini`` recipe: DALL-E Mini / Mega from a min-dalle folder (``checkpoint=``).

The graph is ``dalle-shapes``' (tokenizer -> text encoder -> Guide(supercondition) ->
SampleTokens -> Decode) on the 16x16 grid of 256 px images, with min-dalle's defaults:
``supercondition_factor`` 16 (the guidance scale), ``top_k`` 256, temperature 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULTS = {"cfg_scale": 16.0, "temperature": 1.0, "top_k": 256}


def _model(checkpoint, heads):
    from t2i_dalle.mini.checkpoint import load_cached

    if checkpoint is None:
        from t2i.checkpoints import CheckpointError

        raise CheckpointError(
            "dalle-mini ships no weights",
            fix="pass --option checkpoint=FOLDER (min-dalle's encoder.pt, decoder.pt, "
            "detoker.pt, vocab.json, merges.txt)",
        )
    return load_cached(checkpoint, heads)


def create_tokenizer(*, checkpoint: str | os.PathLike | None = None, heads: int | None = None):
    """Factory of ``dalle-mini.bpe``."""
    return _model(checkpoint, heads).tokenizer


def create_text_encoder(*, checkpoint=None, heads: int | None = None) -> Any:
    """Factory of ``dalle-mini.encoder``: the BART encoder."""
    from t2i_dalle.mini.components import MiniTextEncoder

    return MiniTextEncoder(_model(checkpoint, heads).encoder)


def create_predictor(*, checkpoint=None, heads: int | None = None) -> Any:
    """Factory of ``dalle-mini.decoder``: the KV-cached BART decoder."""
    from t2i_dalle.mini.components import MiniTokenPredictor

    return MiniTokenPredictor(_model(checkpoint, heads).decoder)


def create_decoder(*, checkpoint=None, heads: int | None = None) -> Any:
    """Factory of ``dalle-mini.vqgan``: the VQGAN detokenizer."""
    from t2i_dalle.mini.components import MiniDetokenizer

    return MiniDetokenizer(_model(checkpoint, heads).detokenizer)


def dalle_mini_recipe(*, checkpoint: str | os.PathLike | None = None, heads: int | None = None):
    """Recipe ``dalle-mini``: min-dalle's DALL-E Mini / Mega folder (256x256, 16x16 tokens)."""
    from t2i.graph import Graph
    from t2i.recipe import Recipe
    from t2i_dalle.mini.checkpoint import find_files
    from t2i_dalle.recipes import BINDINGS, INFOTEXT

    files = find_files(checkpoint) if checkpoint is not None else None
    if files is None:
        _model(None, heads)
    options: dict[str, Any] = {"checkpoint": str(checkpoint)}
    if heads is not None:
        options["heads"] = int(heads)
    g = Graph(meta={"kind": "autoregressive"})
    tok = g.add("tokenizer", "LoadTokenizer", name="dalle-mini.bpe", options=options)
    enc = g.add("text_encoder", "LoadTextEncoder", name="dalle-mini.encoder", options=options)
    model = g.add("denoiser", "LoadDenoiser", name="dalle-mini.decoder", options=options)
    dec = g.add("decoder", "LoadDecoder", name="dalle-mini.vqgan", options=options)
    cond = {}
    for side in ("positive", "negative"):
        t = g.add(f"tokenize_{side}", "Tokenize", tokenizer=tok["tokenizer"], text="")
        c = g.add(f"encode_{side}", "EncodeText", text_encoder=enc["text_encoder"],
                  tokens=t["tokens"])  # fmt: skip
        cond[side] = c["conditioning"]
    grid = g.add("grid", "Dalle.Grid256")
    guide = g.add(
        "guide", "Guide", model=model["model"], positive=cond["positive"],
        negative=cond["negative"], guidance="supercondition", cfg_scale=DEFAULTS["cfg_scale"],
    )  # fmt: skip
    s = g.add("sample", "SampleTokens", guided=guide["guided"], latent=grid["latent"],
              top_k=DEFAULTS["top_k"], temperature=DEFAULTS["temperature"])  # fmt: skip
    g.add("decode", "Decode", decoder=dec["decoder"], samples=s["samples"])
    defaults = {"width": 256, "height": 256, "steps": 1, "sampler": "top_k",
                "guidance": "supercondition", **DEFAULTS}  # fmt: skip
    from t2i.files import short_hash

    return Recipe(
        graph=g, output=g["decode"]["image"], bindings=BINDINGS, size_multiple=256,
        defaults=defaults, model_name=f"dalle-mini:{Path(checkpoint).name}",
        model_hash=short_hash(files["decoder"]),
        description="DALL-E Mini / Mega from a min-dalle folder (256x256)",
        infotext_fields=INFOTEXT,
    )  # fmt: skip
