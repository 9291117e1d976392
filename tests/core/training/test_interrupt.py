"""Ctrl-C (SIGINT) and SIGTERM stop ``t2i train`` after the step in flight and save a
resumable state first, even long before the next ``--save-every``."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from t2i.training.state import load_state


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_state_and_exits_130(tmp_path, toy_cli, sig):
    out = tmp_path / "run"
    command = [sys.executable, str(toy_cli), "--log-level", "info", "--log-format", "json"]
    command += ["train", "toy", "--out", str(out), "--device", "cpu", "--delay", "0.02"]
    command += ["--steps", "5000", "--save-every", "100000", "--log-every", "1"]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    watchdog = threading.Timer(120, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    logged = 0
    try:
        for line in proc.stderr:
            if line.startswith("{") and json.loads(line).get("event") == "toy":
                logged = json.loads(line)["step"]
                if logged >= 5:
                    proc.send_signal(sig)
                    break
        rest = proc.stderr.read()
        proc.wait()
    finally:
        watchdog.cancel()
    assert proc.returncode == 130, (proc.returncode, rest[-2000:])
    assert "resumable state" in rest
    state = load_state(out / "toy.state.pt")
    assert logged <= state["step"] <= logged + 5  # the steps done were kept
    assert not (out / "model").exists()  # no export of an unfinished run
