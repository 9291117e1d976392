"""Hook implementations of the DALL-E family (entry point ``t2i`` -> ``dalle``).

Everything is registered by import path (:func:`t2i.registry.lazy`): discovering the plugin
imports no torch. Factories: :mod:`t2i_dalle.recipes` (the ``dalle-shapes`` components and
recipe), :mod:`t2i_dalle.mini.recipes` (``dalle-mini``), :mod:`t2i_dalle.train`.
"""

from __future__ import annotations

from t2i.kinds import TOKENS
from t2i.registry import hookimpl, lazy


def _at(module: str, name: str, doc: str, **attributes) -> object:
    return lazy(f"t2i_dalle.{module}:{name}", doc=doc, **attributes)


@hookimpl
def t2i_register_tokenizers(register) -> None:
    register("dalle.words", _at("recipes", "create_tokenizer", "word tokenizer of dalle-shapes"))
    doc = "DALL-E Mini's byte-pair tokenizer (vocab.json + merges.txt)"
    register("dalle-mini.bpe", _at("mini.recipes", "create_tokenizer", doc))


@hookimpl
def t2i_register_text_encoders(register) -> None:
    doc = "the DALL-E transformer's text embedding (token + text position)"
    register("dalle.text", _at("recipes", "create_text_encoder", doc))
    doc = "DALL-E Mini's BART text encoder"
    register("dalle-mini.encoder", _at("mini.recipes", "create_text_encoder", doc))


@hookimpl
def t2i_register_denoisers(register) -> None:
    doc = "DALL-E transformer over [text | image tokens], KV-cached (a token predictor)"
    register("dalle.transformer", _at("recipes", "create_predictor", doc), contract=TOKENS)
    doc = "DALL-E Mini's BART decoder of image tokens, KV-cached (a token predictor)"
    register("dalle-mini.decoder", _at("mini.recipes", "create_predictor", doc), contract=TOKENS)


@hookimpl
def t2i_register_decoders(register) -> None:
    register("dalle.dvae", _at("recipes", "create_decoder", "DALL-E dVAE: tokens <-> pixels"))
    doc = "DALL-E Mini's VQGAN detokenizer (16x16 tokens -> 256 px)"
    register("dalle-mini.vqgan", _at("mini.recipes", "create_decoder", doc))


@hookimpl
def t2i_register_nodes(register) -> None:
    register("Dalle.Grid64", _at("nodes", "Grid64", "token grid of 64 px images (16x16)"))
    register("Dalle.Grid256", _at("nodes", "Grid256", "token grid of 256 px images (16x16)"))
    register("Dalle.PrimeTokens", _at("nodes", "PrimeTokens", "image-prompt completion"))


@hookimpl
def t2i_register_recipes(register) -> None:
    register(
        "dalle-shapes",
        _at("recipes", "dalle_shapes_recipe", "DALL-E on the shapes benchmark (64x64)"),
        default=False,
    )
    register(
        "dalle-mini",
        _at("mini.recipes", "dalle_mini_recipe", "DALL-E Mini / Mega (a min-dalle folder)"),
        default=False,
    )


@hookimpl
def t2i_register_trainers(register) -> None:
    doc = "Train dalle-shapes: --stage vae (dVAE, Gumbel-softmax), then --stage prior."
    register("dalle", _at("train", "DalleTrainer", doc))
