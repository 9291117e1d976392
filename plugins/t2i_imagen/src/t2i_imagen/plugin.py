"""Hook implementations of the Imagen family (entry point ``t2i`` -> ``imagen``).

Registered by import path (:func:`t2i.registry.lazy`): discovery imports neither torch nor
transformers. Factories: :mod:`t2i_imagen.recipes` (``imagen``: DeepFloyd IF folders;
``imagen-shapes``: the embedded default), :mod:`t2i_imagen.train` (``t2i train imagen``).
"""

from __future__ import annotations

from t2i.kinds import DIFFUSION
from t2i.registry import hookimpl, lazy


def _at(module: str, name: str, doc: str, **attributes) -> object:
    return lazy(f"t2i_imagen.{module}:{name}", doc=doc, **attributes)


@hookimpl
def t2i_register_tokenizers(register) -> None:
    register("imagen.t5_tokenizer", _at("recipes", "create_t5_tokenizer", "IF's T5 tokenizer"))


@hookimpl
def t2i_register_text_encoders(register) -> None:
    register(
        "imagen.t5_encoder",
        _at("recipes", "create_t5_encoder", "frozen T5 encoder of an IF folder (77 tokens)"),
    )


@hookimpl
def t2i_register_denoisers(register) -> None:
    register(
        "imagen.if_unet",
        _at("recipes", "create_if_denoiser", "DeepFloyd IF UNet (stage I or II)"),
        contract=DIFFUSION,
    )
    register(
        "imagen.shapes_unet",
        _at("recipes", "create_shapes_denoiser", "an imagen-shapes Efficient U-Net stage"),
        contract=DIFFUSION,
    )


@hookimpl
def t2i_register_decoders(register) -> None:
    register("imagen.pixels", _at("recipes", "create_decoder", "pixel space [-1, 1] -> [0, 1]"))


@hookimpl
def t2i_register_nodes(register) -> None:
    register(
        "Imagen.LowResCondition",
        _at("nodes", "ImagenLowResCondition", "a stage's output -> the SR stage's condition"),
    )
    register(
        "Imagen.CascadeLatents",
        _at("nodes", "CascadeLatents", "size and seeds of the base and the SR batch"),
    )


@hookimpl
def t2i_register_recipes(register) -> None:
    register(
        "imagen",
        _at(
            "recipes",
            "imagen_recipe",
            "DeepFloyd IF cascade (stage I -> II) from folders; none: embedded imagen-shapes",
        ),
        aliases=("deepfloyd-if", "if"),
    )
    register(
        "imagen-shapes",
        _at("recipes", "imagen_shapes_recipe", "embedded default: imagen-shapes (32 -> 64 px)"),
        default=False,
    )


@hookimpl
def t2i_register_trainers(register) -> None:
    doc = "Train a stage of imagen-shapes (Efficient U-Net, frozen MiniLM, noise augmentation)."
    register("imagen", _at("train", "ImagenTrainer", doc))
