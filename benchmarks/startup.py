"""Start-up cost of the ``t2i`` command: what a user waits for before any model work.

Measures, as separate processes (the way a shell runs them), the median wall time of
``t2i --help``, ``t2i recipes``, a usage error (``t2i generate`` without a prompt) and
``t2i generate PROMPT`` up to the first model call (the text encoder; the process stops
there), plus the heaviest imports of that last one (``python -X importtime``).

    python benchmarks/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

FIRST_CALL = """
import sys, time
start = time.perf_counter()
import t2i.graph.nodes as nodes
def stop(self, ctx, **values):
    print(f"FIRST_MODEL_CALL {time.perf_counter() - start:.3f}", flush=True)
    raise SystemExit(0)
nodes.EncodeText.execute = stop
from t2i.cli.main import main
main(["generate", "a large green circle in the center", "--seed", "3", "-o", "/tmp/startup.png"])
"""


def _timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=False)
    return time.perf_counter() - started


def _first_call() -> float:
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("FIRST_MODEL_CALL"))
    return float(line.split()[1])


def _heaviest_imports(n: int = 8) -> list[tuple[float, str]]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", FIRST_CALL], capture_output=True, text=True
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
    args = parser.parse_args()
    t2i = [sys.executable, "-m", "t2i.cli.main"]
    cases = {
        "t2i --help": [*t2i, "--help"],
        "t2i recipes": [*t2i, "recipes"],
        "t2i generate (usage error)": [*t2i, "generate"],
    }
    for label, cmd in cases.items():
        times = [_timed(cmd) for _ in range(args.runs)]
        print(f"{label:<40} median {statistics.median(times):.3f} s  (min {min(times):.3f})")
    firsts = [_first_call() for _ in range(args.runs)]
    print(
        f"{'t2i generate: until the first model call':<40} median "
        f"{statistics.median(firsts):.3f} s  (min {min(firsts):.3f})"
    )
    print("heaviest top-level imports before the first model call (cumulative s):")
    for seconds, name in _heaviest_imports():
        print(f"  {seconds:7.3f}  {name}")


if __name__ == "__main__":
    main()
