"""A run killed with SIGKILL resumes on the loss curve of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

from t2i.testing.toy_training import build_toy
from t2i.training import TrainConfig, train
from t2i.training.state import load_state

LOOP = dict(steps=60, batch_size=8, lr=0.05, save_every=10, log_every=1, ema_decay=0.5, seed=2)
TOY = dict(rows=256, noise=0.1)  # noise: the loss draws from torch's generator too


def loop_flags(**options):
    """``--batch-size 8 ...`` of TrainConfig keywords."""
    return [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def _losses(lines):
    events = (json.loads(line) for line in lines if line.startswith("{"))
    return {e["step"]: e["loss"] for e in events if e.get("event") == "toy"}


def _run_until_killed(command, kill_at: int) -> tuple[dict[int, float], list[str]]:
    """Start ``command``, SIGKILL it once it logged step ``kill_at``; its losses and lines."""
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    watchdog = threading.Timer(120, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if _losses([line]).get(kill_at) is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        lines += proc.stderr.read().splitlines()
        proc.wait()
    finally:
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL, "".join(lines[-20:])
    return _losses(lines), lines


@pytest.mark.slow
def test_a_killed_run_resumes_on_the_same_loss_curve(tmp_path, toy_cli):
    out = tmp_path / "run"
    command = [sys.executable, str(toy_cli), "--log-level", "info", "--log-format", "json"]
    command += ["train", "toy", "--out", str(out), "--device", "cpu", "--delay", "0.03"]
    command += ["--rows", str(TOY["rows"]), "--noise", str(TOY["noise"]), *loop_flags(**LOOP)]
    before, lines = _run_until_killed(command, kill_at=25)
    assert not [line for line in lines if "step/s" in line]  # TQDM_DISABLE silenced the bar

    state = load_state(out / "toy.state.pt")  # complete: the saves are atomic
    saved, reached = state["step"], max(before)
    assert saved >= 10 and saved % 10 == 0 and 0 <= reached - saved <= LOOP["save_every"]

    config = TrainConfig(name="toy", device="cpu", **LOOP)
    resumed = train(*build_toy(seed=LOOP["seed"], **TOY), config, out)
    reference = train(*build_toy(seed=LOOP["seed"], **TOY), config, tmp_path / "reference")
    curve = dict(reference.losses)
    assert [step for step, _ in resumed.losses] == list(range(saved + 1, 61))
    for step, loss in [*before.items(), *resumed.losses]:
        assert loss == pytest.approx(curve[step], rel=1e-6, abs=1e-9), step
    for mine, theirs in zip(resumed.model.parameters(), reference.model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(resumed.ema.shadow, reference.ema.shadow, rtol=1e-6, atol=1e-7)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
