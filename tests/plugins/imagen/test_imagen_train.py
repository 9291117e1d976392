"""``t2i train imagen`` on the core loop: both stages train on renders and frozen MiniLM
states, export the files the recipe reads, and resume exactly (2 + 1 steps = 3 steps)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

pytest.importorskip("t2i_imagen")

from t2i_imagen.shapes_model import load_stage
from t2i_imagen.train import train_command


@pytest.fixture(scope="module")
def minilm():
    from t2i.text.minilm import MiniLmNotFoundError, find_minilm

    try:
        return find_minilm()
    except MiniLmNotFoundError as exc:
        pytest.skip(str(exc))


def _train(out, data, stage, steps, *extra):
    args = ["--out", str(out), "--stage", stage, "--tiny", "--images", "24", "--size", "32",
            "--data", str(data), "--workers", "1", "--steps", str(steps), "--batch-size", "4",
            "--device", "cpu", "--save-every", "1", "--ema-decay", "0.9", *extra]  # fmt: skip
    result = CliRunner().invoke(train_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "model" / f"{stage}.safetensors"


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["base", "sr"])
def test_trains_exports_and_resumes_exactly(tmp_path, minilm, stage):
    data = tmp_path / "renders.pt"
    straight = load_file(str(_train(tmp_path / "a", data, stage, 3)))
    _train(tmp_path / "b", data, stage, 2)
    resumed_file = _train(tmp_path / "b", data, stage, 3)
    resumed = load_file(str(resumed_file))
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)
    loaded = load_stage(resumed_file.parent, stage)
    assert loaded.size == (32 if stage == "sr" else 16)
    assert loaded.training["steps"] == 3 and loaded.unet.config.noise_conditioning == (
        stage == "sr"
    )


def test_bad_options_are_usage_errors(tmp_path):
    result = CliRunner().invoke(train_command, ["--out", str(tmp_path), "--size", "40"])
    assert result.exit_code == 2 and "--size must be a multiple of 16" in result.output
