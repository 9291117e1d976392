"""``t2i compare`` in parts: measure some recipes per process, write one report from all parts.

The GPU machine takes at most 64 MiB of files per call, less than every family's weights and
MiniLM together, so the GPU comparison runs in calls of a few recipes each. ``run`` measures
the named recipes one at a time (``t2i.compare.run.run_recipe``, the same settings as
``t2i compare``) and pickles each outcome to ``PARTS/<recipe>.pkl`` as soon as it is measured
(a call cut short keeps what it finished); ``merge`` reads every part written by ``run`` and
writes the report, figures and significance tests exactly as ``t2i compare`` does. Parts
must share their settings (checked).

    python benchmarks/compare_parts.py run PARTS ldm-shapes dalle-shapes --device cuda \
        --prompts 32 --seeds 4
    python benchmarks/compare_parts.py merge OUT PARTS_A PARTS_B [--reread-training]
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import attrs

from t2i.compare.measure import training_compute, weights_path
from t2i.compare.recipes import resolve_recipes
from t2i.compare.report import write_comparison
from t2i.compare.run import CompareSettings, RecipeRun, run_all
from t2i.plugins import get_plugin_manager


def run_parts(parts: Path, recipes: list[str], settings: CompareSettings) -> None:
    """Measure ``recipes`` in turn (``run_all``); each outcome (run or skip) is pickled to
    ``parts/<name>.pkl`` as soon as it is measured."""
    manager = get_plugin_manager()
    parts.mkdir(parents=True, exist_ok=True)

    def save(outcome) -> None:
        with open(parts / f"{outcome.recipe}.pkl", "wb") as f:
            pickle.dump({"settings": settings.to_dict(), "outcome": outcome}, f)
        state = "measured" if isinstance(outcome, RecipeRun) else f"skipped: {outcome.reason}"
        print(f"{outcome.recipe}: {state}", flush=True)

    run_all(resolve_recipes(manager, recipes), settings, manager=manager, on_recipe=save)


def _training_reread(run: RecipeRun) -> RecipeRun:
    """``run`` with its training compute read again from this machine's weights folder of
    the recipe (run records added to a model.json after the measurement)."""
    entry = get_plugin_manager().registry.get("recipe", run.recipe)
    folder = weights_path(entry.name, entry.factory, run.checkpoint)
    return attrs.evolve(run, training=training_compute(folder))


def merge_parts(out: Path, folders: list[Path], reread_training: bool = False) -> None:
    """One comparison report in ``out`` from every part file under ``folders``
    (``reread_training``: the training compute from this machine's weights folders)."""
    files = sorted(f for d in folders for f in d.glob("*.pkl"))
    if not files:
        sys.exit(f"no part files (*.pkl) under {', '.join(map(str, folders))}")
    loaded = []
    for f in files:
        with open(f, "rb") as fh:
            loaded.append(pickle.load(fh))  # our own files, written by run_parts
    settings = loaded[0]["settings"]
    for f, part in zip(files, loaded):
        if part["settings"] != settings:
            sys.exit(f"{f}: measured with other settings than {files[0]}")
    runs = [p["outcome"] for p in loaded if isinstance(p["outcome"], RecipeRun)]
    skipped = [p["outcome"] for p in loaded if not isinstance(p["outcome"], RecipeRun)]
    settings = CompareSettings(**{**settings, "step_counts": tuple(settings["step_counts"])})
    if reread_training:
        runs = [_training_reread(run) for run in runs]
    write_comparison(out, runs, skipped, settings)
    for run in runs:
        a = run.intervals["overall"]
        print(f"{run.recipe}: alignment {a.value:.3f} [{a.low:.2f}, {a.high:.2f}]")
    print(f"report: {out / 'report.md'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("parts", type=Path)
    r.add_argument("recipes", nargs="+")
    r.add_argument("--device", default=None)
    r.add_argument("--prompts", type=int, default=64)
    r.add_argument("--seeds", type=int, default=4)
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--speed-calls", type=int, default=4)
    r.add_argument("--step-counts", default="4,8,16")
    m = sub.add_parser("merge")
    m.add_argument("out", type=Path)
    m.add_argument("folders", type=Path, nargs="+")
    m.add_argument(
        "--reread-training",
        action="store_true",
        help="read each recipe's training compute again from this machine's weights folder",
    )
    args = ap.parse_args()
    if args.command == "run":
        settings = CompareSettings(
            n_prompts=args.prompts,
            n_seeds=args.seeds,
            device=args.device,
            batch_size=args.batch_size,
            speed_calls=args.speed_calls,
            step_counts=tuple(int(v) for v in args.step_counts.split(",")),
        )
        run_parts(args.parts, args.recipes, settings)
    else:
        merge_parts(args.out, args.folders, args.reread_training)


if __name__ == "__main__":
    main()
