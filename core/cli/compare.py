"""``t2i compare``: the families side by side on the shapes benchmark (:mod:`t2i.compare`)."""

from __future__ import annotations

from pathlib import Path

import click


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: write step counts as 4,8,16") from None
    if any(v < 1 for v in values):
        raise click.BadParameter(f"{text!r}: step counts are >= 1")
    return values


def _echo_progress(outcome) -> None:
    from t2i.compare.run import Skipped

    state = "skipped" if isinstance(outcome, Skipped) else "measured"
    click.echo(f"  {outcome.recipe}: {state}", err=True)


@click.command("compare")
@click.argument("recipes", nargs=-1)
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="New (or empty) folder for report.md, report.json and PNG figures.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out folder.")
@click.option("--checkpoint", "checkpoints", multiple=True, metavar="RECIPE=PATH",
              help="Weights of a recipe (repeatable); as the argument RECIPE=PATH.")  # fmt: skip
@click.option("--prompts", "n_prompts", type=click.IntRange(min=2), default=64, show_default=True,
              help="Prompts from the fixed set (half single, half pair).")  # fmt: skip
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=4, show_default=True,
              help="Seeds per prompt.")  # fmt: skip
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="First seed; also the bootstrap's numpy seed.")  # fmt: skip
@click.option("--device", type=str, default=None, help="Device, e.g. cuda (recipe default).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="The large batch of the images/s figure (batch 1 is always timed).")  # fmt: skip
@click.option("--size", type=click.IntRange(min=16, max=512), default=64, show_default=True,
              help="Image side in pixels.")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Sampling steps of the diffusion recipes (recipe default).")  # fmt: skip
@click.option("--step-counts", type=str, default="4,8,16", show_default=True,
              help="Steps of the alignment-vs-steps sweep (diffusion recipes).")  # fmt: skip
@click.option("--sweeps/--no-sweeps", default=True, show_default=True,
              help="Sweep steps / temperature / top-k / truncation psi if bound.")  # fmt: skip
@click.option("--speed-calls", type=click.IntRange(min=1), default=4, show_default=True,
              help="Timed calls at batch 1.")  # fmt: skip
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=100), default=2000,
              show_default=True, help="Bootstrap resamples of the intervals.")  # fmt: skip
def compare_command(recipes: tuple[str, ...], out: Path, overwrite: bool,
                    checkpoints: tuple[str, ...], step_counts: str, **options) -> None:  # fmt: skip
    """Compare RECIPE ... (default: every installed shapes default) on the shapes benchmark.

    RECIPE=PATH builds a recipe with checkpoint=PATH. A recipe that cannot build (weights
    not installed) is listed in the report as skipped, with the reason; the exit code is 1
    when none could be measured.
    """
    from t2i.compare.recipes import RecipeChoiceError, resolve_recipes
    from t2i.compare.report import OutputExistsError, check_out_dir, write_comparison
    from t2i.compare.run import CompareSettings, check_device, run_all
    from t2i.plugins import get_plugin_manager

    manager = get_plugin_manager()
    try:
        specs = resolve_recipes(manager, recipes, checkpoints)
        check_out_dir(out, overwrite)
        check_device(options["device"])
    except (RecipeChoiceError, OutputExistsError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    settings = CompareSettings(step_counts=_counts(step_counts), **options)
    click.echo(f"comparing {', '.join(s.name for s in specs)}", err=True)
    runs, skipped = run_all(specs, settings, manager=manager, on_recipe=_echo_progress)
    write_comparison(out, runs, skipped, settings)
    for run in runs:
        a = run.intervals["overall"]
        click.echo(f"{run.recipe}: alignment {a.value:.3f} [{a.low:.2f}, {a.high:.2f}]")
    for s in skipped:
        click.echo(f"{s.recipe}: skipped ({s.reason})")
    click.echo(f"report: {out / 'report.md'}")
    if not runs:
        click.echo("no recipe could be measured (see the skipped ones above)", err=True)
        raise SystemExit(1)
