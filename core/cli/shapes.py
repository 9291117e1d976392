"""Click commands of the shapes benchmark: ``t2i data shapes`` and ``t2i eval``.

The lead mounts :data:`data` and :data:`eval_command` on the ``t2i`` group.
"""

from __future__ import annotations

from pathlib import Path

import click

from t2i.shapes.render import SUPPORTED_SIZES


@click.group("data")
def data() -> None:
    """Make training and test data."""


@data.command("shapes")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write PNGs and captions.jsonl into.")  # fmt: skip
@click.option("--n", "n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Number of images.")  # fmt: skip
@click.option("--size", type=click.Choice([str(s) for s in SUPPORTED_SIZES]), default="64",
              show_default=True, help="Image side in pixels.")  # fmt: skip
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train",
              show_default=True, help="Split (held-out combinations in test).")  # fmt: skip
@click.option("--seed", type=click.IntRange(0, 199), default=0, show_default=True,
              help="Dataset seed: another seed gives other items of the same split.")  # fmt: skip
@click.option("--pair-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of two-object scenes.")  # fmt: skip
def shapes(out: Path, n: int, size: str, split: str, seed: int, pair_fraction: float) -> None:
    """Render N shapes scenes as PNG files plus captions.jsonl (caption + attributes per line)."""
    from t2i.shapes.dataset import export_folder

    export_folder(out, n, int(size), split, seed, pair_fraction)
    click.echo(f"wrote {n} images and captions.jsonl to {out}")


@click.command("eval")
@click.argument("target")
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), default=None,
              help="Weights passed to Engine.build(TARGET, checkpoint=PATH).")  # fmt: skip
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("eval-out"), show_default=True,
              help="Folder for report.json, report.md and samples.png.")  # fmt: skip
@click.option("--prompts", "n_prompts", type=click.IntRange(min=2), default=64, show_default=True,
              help="Prompts from the fixed set (half single, half pair).")  # fmt: skip
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=4, show_default=True,
              help="Seeds per prompt.")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampler steps.")
@click.option("--size", type=click.IntRange(min=16, max=512), default=64, show_default=True,
              help="Image side in pixels.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per Engine call (default: all seeds of one prompt).")  # fmt: skip
@click.option("--cfg-scale", type=float, default=None, help="Guidance scale (recipe default).")
@click.option("--sampler", type=str, default=None, help="Sampler name (recipe default).")
@click.option("--device", type=str, default=None,
              help="Device to generate on, e.g. cuda (recipe default).")  # fmt: skip
def eval_command(
    target: str,
    checkpoint: Path | None,
    out: Path,
    n_prompts: int,
    n_seeds: int,
    steps: int | None,
    size: int,
    batch_size: int | None,
    cfg_scale: float | None,
    sampler: str | None,
    device: str | None,
) -> None:
    """Score recipe TARGET on the shapes benchmark: alignment, Fréchet distance, diversity."""
    from t2i.shapes.evaluate import evaluate_recipe

    report = evaluate_recipe(
        target,
        checkpoint=str(checkpoint) if checkpoint else None,
        out=out,
        n_prompts=n_prompts,
        n_seeds=n_seeds,
        steps=steps,
        size=size,
        batch_size=batch_size,
        cfg_scale=cfg_scale,
        sampler=sampler,
        **({"device": device} if device else {}),
    )
    a = report.alignment
    click.echo(
        f"alignment overall={a['overall']:.3f} single={a['single']:.3f} pair={a['pair']:.3f} "
        f"FD={report.frechet_distance:.2f} -> {out}"
    )
