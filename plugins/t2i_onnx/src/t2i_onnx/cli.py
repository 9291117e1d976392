"""``t2i export onnx RECIPE --out DIR``: the command (mounted by :mod:`t2i_onnx.plugin`)."""

from __future__ import annotations

import click


@click.group("export")
def export_group() -> None:
    """Export a recipe's models for deployment runtimes."""


@export_group.command("onnx")
@click.argument("recipe")
@click.option("--out", "out", required=True, type=click.Path(), help="Folder to write.")
@click.option("--checkpoint", default=None, help="Checkpoint file or folder for the recipe.")
@click.option("--option", "recipe_options", multiple=True, metavar="KEY=VALUE")
@click.option("--fp16", is_flag=True, help="Export float16 weights (for GPU runtimes).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
def onnx_command(recipe, out, checkpoint, recipe_options, fp16, opset, overwrite) -> None:
    """Export every model RECIPE runs to OUT/<name>/model.onnx with a manifest.json.

    Run it with `t2i generate --onnx-dir OUT "prompt"`.
    """
    from t2i.cli.main import parse_options
    from t2i_onnx.exporter import DEFAULT_OPSET, export_recipe
    from t2i_onnx.manifest import OnnxExportError

    options = parse_options(recipe_options)
    if checkpoint:
        options["checkpoint"] = checkpoint
    try:
        manifest = export_recipe(
            recipe,
            out,
            options=options,
            fp16=fp16,
            opset=opset or DEFAULT_OPSET,
            overwrite=overwrite,
            progress=lambda message: click.echo(message, err=True),
        )
    except OnnxExportError as exc:
        raise click.UsageError(str(exc)) from exc
    for model in manifest["models"].values():
        click.echo(f"{out}/{model['file']}")
    for part in manifest["not_exported"]:
        if part["kind"] != "tokenizer":
            click.echo(
                f"not exported (runs in torch): {part['kind']} {part['component']}", err=True
            )
