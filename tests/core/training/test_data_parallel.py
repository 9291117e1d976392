"""``torchrun`` with 2 CPU processes (gloo) ends where 1 process with the same batch does."""

import os
import sys

import pytest
import torch

from t2i.testing import run_process_group
from t2i.testing.toy_training import build_toy
from t2i.training import TrainConfig, train
from t2i.training.state import load_state

LOOP = dict(steps=12, batch_size=8, lr=0.05, save_every=5, seed=1)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, toy_cli):
    out = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    command += ["2", str(toy_cli), "train", "toy", "--out", str(out), "--device", "cpu"]
    command += ["--grad-accum", "2"]  # 2 ranks x 2 micro-batches of 2 rows = 8 rows a step
    command += [x for k, v in LOOP.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TQDM_DISABLE", None)
    returncode, stdout, stderr = run_process_group(command, env=env)
    assert returncode == 0, stderr[-3000:]
    assert stdout.strip().splitlines() == [str(out / "model")]  # rank 0 alone reports
    assert stderr.count("| 0/12 [") == 1  # and alone shows a progress bar

    two = load_state(out / "toy.state.pt")
    model, data = build_toy(seed=LOOP["seed"])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    one = train(model, data, TrainConfig(name="toy", device="cpu", **LOOP), tmp_path / "one")
    assert two["step"] == one.step == 12
    for key, value in one.model.state_dict().items():
        assert (two["model"][key] - value).abs().max() < 1e-6, key
        assert (value - start[key]).abs().max() > 1e-2  # the runs did move the weights
    assert torch.equal(two["data"]["generator"], data.state_dict()["generator"])
