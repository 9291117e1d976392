"""The ldm-shapes trainer on the core loop: tiny models, a few steps, resumable, export loads."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from t2i.testing import make_manager, run_process_group
from t2i_ldm import plugin
from t2i_ldm.train import train_command


def _steps(out):
    """(VAE steps, UNet steps) of the run's state files."""
    return tuple(
        torch.load(out / f"{stage}.state.pt", weights_only=True)["step"]
        for stage in ("vae", "unet")
    )


@pytest.mark.slow
def test_train_resume_and_generate(tmp_path):
    out = tmp_path / "run"
    args = [
        "--out",
        str(out),
        "--n",
        "24",
        "--size",
        "32",
        "--vae-steps",
        "2",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--tiny",
        "--workers",
        "1",
        "--save-every",
        "2",
    ]
    result = CliRunner().invoke(train_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _steps(out) == (2, 3)
    first = json.loads((out / "model" / "model.json").read_text())
    # resume: more steps continue from the saved state, not from zero
    args[args.index("--steps") + 1] = "5"
    result = CliRunner().invoke(train_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _steps(out) == (2, 5)
    spec = json.loads((out / "model" / "model.json").read_text())
    assert spec["training"]["steps"] == 5 and spec["training"]["vae_steps"] == 2
    assert spec["scaling_factor"] == first["scaling_factor"] > 0  # kept by the UNet's state
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))  # atomic writes

    manager = make_manager(plugin)
    from t2i import Engine

    pipe = Engine.build("ldm-shapes", plugins=manager, checkpoint=str(out / "model"))
    image = pipe("a red circle", seed=1, steps=2, width=32, height=32).images[0]
    assert image.size == (32, 32)


@pytest.mark.slow
def test_the_vae_stage_resumes_too(tmp_path):
    out = tmp_path / "run"
    base = ["--out", str(out), "--n", "16", "--size", "32", "--batch-size", "4", "--tiny"]
    base += ["--workers", "1", "--steps", "0"]
    result = CliRunner().invoke(train_command, [*base, "--vae-steps", "1"])
    assert result.exit_code == 0, result.output
    first = torch.load(out / "vae.state.pt", weights_only=True)
    result = CliRunner().invoke(train_command, [*base, "--vae-steps", "2"])
    assert result.exit_code == 0, result.output
    second = torch.load(out / "vae.state.pt", weights_only=True)
    assert (first["step"], second["step"]) == (1, 2) and _steps(out) == (2, 0)
    assert second["optimizer"]["state"][0]["step"] == 2  # AdamW went on from its state
    spec = json.loads((out / "model" / "model.json").read_text())
    assert spec["training"]["vae_steps"] == 2


def test_fine_tune_from_an_exported_model(tmp_path):
    first = tmp_path / "first"
    base = ["--n", "16", "--size", "32", "--batch-size", "4", "--tiny", "--workers", "1"]
    CliRunner().invoke(
        train_command,
        ["--out", str(first), "--vae-steps", "1", "--steps", "1", *base],
        catch_exceptions=False,
    )
    second = tmp_path / "second"
    result = CliRunner().invoke(
        train_command,
        ["--out", str(second), "--init", str(first / "model"), "--steps", "2", *base],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    a = json.loads((first / "model" / "model.json").read_text())
    b = json.loads((second / "model" / "model.json").read_text())
    assert a["scaling_factor"] == b["scaling_factor"] and a["unet"] == b["unet"]
    assert (second / "model" / "tokenizer" / "vocab.json").read_text() == (
        first / "model" / "tokenizer" / "vocab.json"
    ).read_text()
    vae_a = (first / "model" / "vae.safetensors").read_bytes()
    assert vae_a == (second / "model" / "vae.safetensors").read_bytes()  # VAE kept as is


def test_bad_options_are_usage_errors(tmp_path):
    result = CliRunner().invoke(train_command, ["--out", str(tmp_path), "--n", "0"])
    assert result.exit_code == 2 and "--images" in result.output
    result = CliRunner().invoke(train_command, ["--out", str(tmp_path), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "captions.jsonl" in result.output
    (tmp_path / "state.pt").write_bytes(b"")  # a run folder of the trainer before the core loop
    result = CliRunner().invoke(train_command, ["--out", str(tmp_path)])
    assert result.exit_code == 2 and "older trainer" in result.output


def test_both_stages_are_trainable_models():
    from transformers import CLIPTextModel

    from t2i.training import TrainableModel
    from t2i_ldm import shapes_model as sm
    from t2i_ldm.trainables import ExportParts, TextToImageTraining, VaeTraining
    from t2i_ldm.unet import UNetModel
    from t2i_ldm.vae import AutoencoderKL

    torch.manual_seed(0)
    vae = VaeTraining(AutoencoderKL(sm.TINY_VAE))
    assert isinstance(vae, TrainableModel)
    assert vae.loss(torch.rand(2, 3, 16, 16) * 2 - 1).ndim == 0
    unet, text = UNetModel(sm.TINY_UNET), CLIPTextModel(sm.text_config(50, tiny=True))
    parts = ExportParts(vae.vae, Path("unused"), sm.TINY_UNET, sm.TINY_VAE)
    empty = torch.full((1, 77), 49)
    stage2 = TextToImageTraining(unet, text, empty_ids=empty, scaling_factor=0.5, parts=parts)
    assert isinstance(stage2, TrainableModel)
    loss = stage2.loss((torch.randn(2, 4, 4, 4), torch.randint(0, 50, (2, 77))))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert unet.out[-1].weight.grad.abs().sum() > 0  # the UNet and the text encoder both learn
    assert text.get_input_embeddings().weight.grad.abs().sum() > 0
    assert stage2.state_dict()["scaling_factor"] == 0.5  # resumed with the run


@pytest.mark.slow
def test_data_parallel_training_under_torchrun(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "t2i.cli.main", "train", "ldm"]
    command += ["--out", str(out), "--images", "16", "--size", "32", "--vae-steps", "2"]
    command += ["--steps", "3", "--batch-size", "4", "--tiny", "--workers", "1", "--device", "cpu"]
    env = {**os.environ, "T2I_LOAD_PLUGINS": "ldm"}  # the suite turns entry points off
    returncode, stdout, stderr = run_process_group(command, env=env)
    assert returncode == 0, stderr[-3000:]
    assert stdout.strip().splitlines() == [str(out / "model")]  # rank 0 alone reports
    assert _steps(out) == (2, 3)
    record = json.loads((out / "model" / "model.json").read_text())["training"]
    assert (record["processes"], record["batch_size"]) == (2, 4)  # the global batch
    names = ["model", "tokenizer", "unet.state.pt", "vae.state.pt"]
    assert sorted(p.name for p in out.iterdir()) == names


def test_batch_must_split_over_the_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(train_command, ["--out", str(tmp_path), "--batch-size", "3"])
    assert result.exit_code == 2 and "--nproc_per_node" in result.output


def test_cooldown_takes_the_lr_linearly_to_zero(tmp_path):
    out = tmp_path / "run"
    args = ["--out", str(out), "--n", "16", "--size", "32", "--vae-steps", "1", "--steps", "4"]
    args += ["--batch-size", "4", "--tiny", "--workers", "1", "--lr", "0.5", "--cooldown", "0.5"]
    result = CliRunner().invoke(train_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    state = torch.load(out / "unet.state.pt", weights_only=True)
    # last step (index 3): warm-up 4/500, progress 3/4 -> (1 - 3/4) / 0.5 of the peak
    assert abs(state["optimizer"]["param_groups"][0]["lr"] - 0.5 * 4 / 500 * 0.5) < 1e-9
    record = json.loads((out / "model" / "model.json").read_text())["training"]
    assert record["cooldown"] == 0.5
    result = CliRunner().invoke(train_command, [*args[:-1], "1.5"])
    assert result.exit_code == 2 and "--cooldown" in result.output


def test_init_gains_context_pooling_and_keeps_it(tmp_path):
    base = ["--n", "16", "--size", "32", "--batch-size", "4", "--tiny", "--workers", "1"]
    first, second = tmp_path / "first", tmp_path / "second"
    CliRunner().invoke(
        train_command,
        ["--out", str(first), "--vae-steps", "1", "--steps", "1", *base],
        catch_exceptions=False,
    )
    args = ["--out", str(second), "--init", str(first / "model"), "--steps", "2", *base]
    result = CliRunner().invoke(train_command, [*args, "--context-pooling", "2"])
    assert result.exit_code == 0, result.output
    spec = json.loads((second / "model" / "model.json").read_text())
    assert spec["unet"]["context_pooling_heads"] == 2
    from t2i import Engine

    manager = make_manager(plugin)
    pipe = Engine.build("ldm-shapes", plugins=manager, checkpoint=str(second / "model"))
    assert pipe("a red circle", seed=1, steps=2, width=32, height=32).images[0].size == (32, 32)
    third = ["--out", str(tmp_path / "third"), "--init", str(second / "model"), *base]
    result = CliRunner().invoke(train_command, [*third, "--context-pooling", "4"])
    assert result.exit_code == 2 and "cannot change" in result.output


def test_fresh_context_pooling_heads_are_as_asked_or_a_usage_error(tmp_path):
    base = ["--n", "16", "--size", "32", "--batch-size", "4", "--tiny", "--workers", "1"]
    args = ["--out", str(tmp_path / "run"), "--vae-steps", "1", "--steps", "1", *base]
    result = CliRunner().invoke(train_command, [*args, "--context-pooling", "2"])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert spec["unet"]["context_pooling_heads"] == 2
    result = CliRunner().invoke(train_command, [*args, "--context-pooling", "3"])
    assert result.exit_code == 2 and "does not divide context_dim=32" in result.output
