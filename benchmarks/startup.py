"""Start-up cost of the ``t2i`` command: what a user waits for before any model work.

Measures, as separate processes (the way a shell runs them), the median wall time of
``t2i --help``, ``t2i recipes``, a usage error (``t2i generate`` without a prompt) and
``t2i generate PROMPT`` up to the first model call (the text encoder; the process stops
there; timed inside the process from its first line), ``import torch`` alone timed the same
way (the floor under it), and the heaviest imports of the generate run (``-X importtime``).

    python benchmarks/startup.py [--runs 5] [--baseline REV]

``--baseline REV`` measures the tree of git revision REV in the same run (``git archive`` into
a temporary folder, put first on ``PYTHONPATH`` so it shadows the editable install; the
installed plugins' entry points then load REV's code), alternating baseline and current run by
run, and prints the ratio current / baseline. Every process may write bytecode (a user's
second run; ``PYTHONDONTWRITEBYTECODE`` is dropped), and each case runs once untimed first.
The load average before and after is printed: the machine may be shared.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRST_CALL = """
import sys, time
start = time.perf_counter()
from t2i.cli.main import main
import t2i.graph.nodes as nodes
def stop(self, ctx, **values):
    print(f"FIRST_MODEL_CALL {time.perf_counter() - start:.3f}", flush=True)
    raise SystemExit(0)
nodes.EncodeText.execute = stop
main(["generate", "a large green circle in the center", "--seed", "3", "-o", "/tmp/startup.png"])
"""
"""``t2i generate`` until the first model call. It imports ``t2i.cli.main`` first, as the
``t2i`` console script does (before 2026-12-02 it imported the nodes, hence torch, first)."""


TORCH_ALONE = """
import gc, time
start = time.perf_counter()
gc.set_threshold(50_000, 10, 10)  # as the t2i command's process (t2i.cli.main.GC_THRESHOLD)
import torch
print(f"FIRST_MODEL_CALL {time.perf_counter() - start:.3f}", flush=True)
"""
"""``import torch`` alone, timed the same way in a process collecting garbage as the ``t2i``
command's does: the floor under the generate case."""


def environment(pythonpath: list[Path] | None) -> dict[str, str]:
    """This process's environment without t2i settings or the no-bytecode switch; with
    ``pythonpath`` first on the path (a baseline tree), else none."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("T2I_") and k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")
    }
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    return env


def baseline_tree(rev: str, folder: Path) -> list[Path]:
    """REV's files under ``folder``; the ``PYTHONPATH`` that makes Python import them."""
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True)
    tree = folder / "tree"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    packages = folder / "packages"  # the core's import names (the editable install maps them)
    packages.mkdir()
    (packages / "t2i").symlink_to(tree / "core")
    kernels = tree / "kernels" / "t2i_kernels"  # revisions before the move: kernels/ itself
    (packages / "t2i_kernels").symlink_to(kernels if kernels.is_dir() else tree / "kernels")
    return [packages, *sorted((tree / "plugins").glob("*/src"))]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=False, env=env, cwd=tempfile.gettempdir())
    return time.perf_counter() - started


def _first_call(env: dict[str, str], code: str = FIRST_CALL) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    line = next((x for x in out.stdout.splitlines() if x.startswith("FIRST_MODEL_CALL")), None)
    if line is None:
        raise RuntimeError(f"the generate run failed:\n{out.stderr[-3000:]}")
    return float(line.split()[1])


def _heaviest_imports(env: dict[str, str], n: int = 8) -> list[tuple[float, str]]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", FIRST_CALL],
        capture_output=True,
        text=True,
        env=env,
    )
    rows = []
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (part.strip() for part in line[12:].split("|"))
            if cumulative.isdigit() and not name.startswith(" "):
                rows.append((int(cumulative) / 1e6, name))
    top = [r for r in rows if "." not in r[1]]  # top-level packages
    return sorted(top, reverse=True)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", metavar="REV", help="also measure git revision REV")
    args = parser.parse_args()
    t2i = [sys.executable, "-m", "t2i.cli.main"]
    cases = {
        "t2i --help": [*t2i, "--help"],
        "t2i recipes": [*t2i, "recipes"],
        "t2i generate (usage error)": [*t2i, "generate"],
        "t2i generate: until the first model call": FIRST_CALL,
        "import torch alone (the floor)": TORCH_ALONE,
    }
    with tempfile.TemporaryDirectory(prefix="t2i-startup-") as scratch:
        envs = {"current": environment(None)}
        if args.baseline:
            envs = {"baseline": environment(baseline_tree(args.baseline, Path(scratch))), **envs}
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.baseline:
            print(f"baseline: {args.baseline}; current: the working tree; median of {args.runs}")
        for label, cmd in cases.items():
            times: dict[str, list[float]] = {name: [] for name in envs}
            for i in range(args.runs + 1):  # run 0 warms up (bytecode, file cache)
                for name, env in envs.items():
                    if isinstance(cmd, str):
                        seconds = _first_call(env, cmd)
                    else:
                        seconds = _timed(cmd, env)
                    if i:
                        times[name].append(seconds)
            medians = {name: statistics.median(t) for name, t in times.items()}
            parts = [f"{name} {medians[name]:.3f} s (min {min(times[name]):.3f})" for name in envs]
            if args.baseline:
                parts.append(f"ratio {medians['current'] / medians['baseline']:.2f}")
            print(f"{label:<42} " + "  ".join(parts))
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("heaviest top-level imports before the first model call (cumulative s, current):")
        for seconds, name in _heaviest_imports(envs["current"]):
            print(f"  {seconds:7.3f}  {name}")


if __name__ == "__main__":
    main()
