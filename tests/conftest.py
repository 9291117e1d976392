"""Test-wide settings: hermetic (no entry-point autoload, no network), few threads."""

import os

os.environ.setdefault("T2I_LOAD_PLUGINS", "")  # entry points off unless a test asks
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

pytest_plugins = ["t2i.testing"]
