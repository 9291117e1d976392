"""Test-wide settings: hermetic (no entry-point autoload, no network), few threads."""

import os

os.environ.setdefault("T2I_LOAD_PLUGINS", "")  # entry points off unless a test asks
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# one core per xdist worker: `pytest -n 2` on two cores with two torch threads each ran four
# spinning OpenMP threads on two cores (the suite took 17 min instead of ~12); subprocesses a
# test starts (the CLI, torchrun) inherit the same budget through OMP_NUM_THREADS
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import torch  # noqa: E402

torch.set_num_threads(THREADS)

pytest_plugins = ["t2i.testing"]
