"""Hook implementations of the GAN family (entry point ``t2i`` -> ``gan``).

Everything is registered by import path (:func:`t2i.registry.lazy`): discovering the plugin
imports neither torch nor transformers. Factories: :mod:`t2i_gan.recipes` (generator,
decoder, the ``gan-shapes`` recipe), :mod:`t2i_gan.text` (MiniLM), :mod:`t2i_gan.train`.
"""

from __future__ import annotations

from t2i.kinds import GENERATOR
from t2i.registry import hookimpl, lazy


def _at(module: str, name: str, doc: str, **attributes) -> object:
    return lazy(f"t2i_gan.{module}:{name}", doc=doc, **attributes)


@hookimpl
def t2i_register_tokenizers(register) -> None:
    register(
        "gan.minilm_tokenizer",
        _at("text", "create_tokenizer", "WordPiece tokenizer of the MiniLM sentence encoder"),
    )


@hookimpl
def t2i_register_text_encoders(register) -> None:
    register(
        "gan.minilm_sentence",
        _at("text", "create_text_encoder", "frozen MiniLM sentence vector (mean-pooled, 384)"),
    )


@hookimpl
def t2i_register_denoisers(register) -> None:
    doc = "DF-GAN-style generator G(z, sentence) -> 64 px image (gan-shapes or a checkpoint)"
    register("gan.generator", _at("recipes", "create_generator", doc), contract=GENERATOR)


@hookimpl
def t2i_register_decoders(register) -> None:
    register("gan.pixels", _at("recipes", "create_decoder", "pixel space [-1, 1] -> [0, 1]"))


@hookimpl
def t2i_register_recipes(register) -> None:
    register(
        "gan-shapes",
        _at("recipes", "gan_shapes_recipe", "DF-GAN-style GAN on the shapes benchmark (64x64)"),
        default=False,
    )


@hookimpl
def t2i_register_trainers(register) -> None:
    doc = "Train the gan-shapes GAN (DF-GAN: hinge + matching-aware GP, EMA generator)."
    register("gan", _at("train", "GanTrainer", doc))


@hookimpl
def t2i_register_commands(cli) -> None:
    """``t2i gan-interpolate``; its callback imports the model code (the CLI starts light)."""
    import click

    @cli.command("gan-interpolate")
    @click.argument("prompt")
    @click.option("--seeds", nargs=2, type=int, default=(0, 1), show_default=True)
    @click.option("--frames", type=click.IntRange(min=2), default=8, show_default=True)
    @click.option("--checkpoint", type=click.Path(exists=True), help="A `t2i train gan` folder.")
    @click.option("--psi", type=click.FloatRange(0, 1), default=1.0, show_default=True)
    @click.option("-o", "--output", type=click.Path(dir_okay=False), default="interpolation.png")
    def gan_interpolate(prompt, seeds, frames, checkpoint, psi, output) -> None:
        """Interpolate gan-shapes' z between two seeds: a strip of FRAMES images of PROMPT."""
        from pathlib import Path

        from t2i_gan.interpolate import interpolate

        strip = interpolate(prompt, seeds, frames, checkpoint=checkpoint, psi=psi)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        strip.save(output)
        click.echo(output)
