"""Bad devices are usage errors, --allow-pickle reaches the recipe, progress without a TTY."""

import pytest
from click.testing import CliRunner

from t2i.cli.main import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize(
    ("device", "words"),
    [("gpu", "not a device name"), ("cuda:7", "cuda"), ("cuda", "CUDA")],
)
def test_a_device_that_does_not_exist_is_a_usage_error(t2i_manager, tmp_path, device, words):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    out = invoke(
        "generate", "x", "--recipe", "toy-gan", "--device", device, "-o", tmp_path / "a.png"
    )
    assert out.exit_code == 2, out.output
    assert words in out.output and "Traceback" not in out.output


def test_allow_pickle_reaches_the_recipe(t2i_manager, monkeypatch, tmp_path):
    from t2i import engine

    seen = {}

    def build(recipe, **kwargs):
        seen.update(kwargs)
        raise engine.EngineError("stop here")

    monkeypatch.setattr(engine.Engine, "build", staticmethod(build))
    out = invoke("generate", "x", "--recipe", "toy-gan", "--checkpoint", "m.ckpt", "--allow-pickle")
    assert out.exit_code == 2 and seen["allow_pickle"] is True and seen["checkpoint"] == "m.ckpt"


def test_progress_is_a_plain_line_without_a_terminal(t2i_manager, tmp_path):
    out = invoke(
        "generate", "x", "--recipe", "toy-diffusion", "--steps", 8, "-o", tmp_path / "a.png"
    )
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if line.startswith("sample: step")]
    assert lines == [f"sample: step {i}/8" for i in (1, 2, 4, 6, 8)]


def test_json_logs_carry_errors(t2i_manager):
    import json

    out = invoke("--log-format", "json", "generate", "x", "--recipe", "nope")
    assert out.exit_code == 2
    event = json.loads(out.output.strip().splitlines()[-1])
    assert event["exit_code"] == 2 and "unknown recipe 'nope'" in event["message"]
