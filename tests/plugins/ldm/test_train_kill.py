"""``t2i train ldm`` killed with SIGKILL mid-run resumes from its last save (issue 12)."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

ARGS = ["--images", "16", "--size", "32", "--vae-steps", "2", "--batch-size", "4", "--tiny"]
ARGS += ["--workers", "1", "--device", "cpu", "--save-every", "5", "--log-every", "1"]


def _command(out, steps):
    head = [sys.executable, "-m", "t2i.cli.main", "--log-level", "info", "--log-format", "json"]
    return [*head, "train", "ldm", "--out", str(out), "--steps", str(steps), *ARGS]


def _unet_steps(text):
    events = (json.loads(line) for line in text.splitlines() if line.startswith("{"))
    return [e["step"] for e in events if e.get("event") == "unet"]


@pytest.mark.slow
def test_a_killed_ldm_run_resumes_from_its_last_save(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "T2I_LOAD_PLUGINS": "ldm", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _command(out, 400), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=env, start_new_session=True,
    )  # fmt: skip
    watchdog = threading.Timer(180, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    killed_at = 0
    try:
        for line in proc.stderr:
            if _unet_steps(line) and _unet_steps(line)[0] >= 12:
                killed_at = _unet_steps(line)[0]
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait()
    finally:
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(out / "unet.state.pt", weights_only=True)["step"]
    assert saved % 5 == 0 and killed_at - 5 < saved <= killed_at  # at most one interval lost
    resumed = subprocess.run(_command(out, 16), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _unet_steps(resumed.stderr) == list(range(saved + 1, 17))  # continues, not anew
    assert torch.load(out / "unet.state.pt", weights_only=True)["step"] == 16
    assert (out / "model" / "unet.safetensors").is_file()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
