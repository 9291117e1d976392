"""Bad input to ``t2i dreambooth`` (issue 16.7): clear messages before model work, nothing
lost. (LoRA files for another architecture and rank mismatches: tests/plugins/ldm/
test_ldm_lora.py.)"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from PIL import Image
from structlog.testing import capture_logs
from t2i_dreambooth import DreamBoothOptions, DreamBoothOptionsError, dreambooth
from t2i_dreambooth.data import InstanceImagesError


def _run(instance_dir, out, **kw):
    base = dict(
        recipe="toy-diffusion",
        instance_dir=instance_dir,
        instance_prompt="a sks dot",
        output_dir=out,
        steps=2,
        batch_size=1,
    )
    return dreambooth(DreamBoothOptions(**{**base, **kw}))


def test_empty_or_missing_instance_folder(toy_manager, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InstanceImagesError, match="holds no images"):
        _run(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(InstanceImagesError, match="no such folder"):
        _run(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out" / "dreambooth.state.pt").exists()


def test_unreadable_image_is_named(toy_manager, instance_dir, tmp_path):
    (instance_dir / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(InstanceImagesError, match=r"broken\.png: not a readable image"):
        _run(instance_dir, tmp_path / "out")


def test_mixed_sizes_are_resized_and_logged(toy_manager, tmp_path, images):
    folder = images(tmp_path / "mixed", [(8, 8), (12, 9), (30, 16)])
    with capture_logs() as logs:
        model = _run(folder, tmp_path / "out")
    assert (model / "denoiser.safetensors").is_file()
    (said,) = [e for e in logs if e["event"] == "instance_images_resized"]
    assert said["sizes"] == ["12x9", "30x16", "8x8"] and said["mixed"]
    assert said["files"] == ["1.png", "2.png"]


def test_prompt_without_identifier_warns(toy_manager, instance_dir, tmp_path):
    with capture_logs() as logs:
        _run(instance_dir, tmp_path / "out", instance_prompt="a dot", class_prompt="a dot")
    assert any(e["event"] == "instance_prompt_without_identifier" for e in logs)


def test_prior_preservation_needs_a_class_prompt(tmp_path):
    with pytest.raises(DreamBoothOptionsError, match="needs --class-prompt"):
        DreamBoothOptions(
            instance_dir=tmp_path,
            instance_prompt="a sks dot",
            output_dir=tmp_path,
            prior_preservation=True,
        )
    with pytest.raises(DreamBoothOptionsError, match="--rank must be >= 1"):
        DreamBoothOptions(instance_dir=tmp_path, instance_prompt="x", output_dir=tmp_path, rank=0)


def test_rerun_and_resume_with_other_options_lose_nothing(toy_manager, instance_dir, tmp_path):
    out = tmp_path / "out"
    _run(instance_dir, out, lora=True, rank=4)
    state = (out / "dreambooth.state.pt").read_bytes()
    with pytest.raises(DreamBoothOptionsError, match="--resume-from-checkpoint latest"):
        _run(instance_dir, out, lora=True, rank=4, steps=4)
    with pytest.raises(DreamBoothOptionsError, match=r"rank: 4 -> 8"):
        _run(instance_dir, out, lora=True, rank=8, steps=4, resume_from_checkpoint="latest")
    with pytest.raises(DreamBoothOptionsError, match=r"lora: True -> False"):
        _run(instance_dir, out, steps=4, resume_from_checkpoint="latest")
    assert (out / "dreambooth.state.pt").read_bytes() == state
    _run(instance_dir, out, lora=True, rank=4, steps=3, resume_from_checkpoint="latest")


def test_cli_reports_usage_errors(toy_manager, tmp_path):
    from t2i.cli.main import cli

    toy_manager.register_commands(cli)  # the CLI mounts commands of the manager it met first

    (tmp_path / "empty").mkdir()
    args = [
        "dreambooth",
        "--recipe",
        "toy-diffusion",
        "--instance-data-dir",
        str(tmp_path / "empty"),
        "--instance-prompt",
        "a sks dot",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "error: --instance-data-dir" in result.output


def test_cli_trains_and_prints_the_model_folder(toy_manager, instance_dir, tmp_path):
    from t2i.cli.main import cli

    toy_manager.register_commands(cli)  # the CLI mounts commands of the manager it met first

    args = [
        "dreambooth",
        "--recipe",
        "toy-diffusion",
        "--instance-data-dir",
        str(instance_dir),
        "--instance-prompt",
        "a sks dot",
        "--class-prompt",
        "a dot",
        "--with-prior-preservation",
        "--num-class-images",
        "2",
        "--lora",
        "--max-train-steps",
        "2",
        "--train-batch-size",
        "1",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(str(tmp_path / "out" / "model"))
    assert Image.open(tmp_path / "out" / "class_images" / "00001.png").size == (8, 8)
