"""``t2i compare`` end to end on toy recipes, with tiny counts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from t2i.cli.compare import compare_command
from t2i.compare.recipes import default_recipes

TINY = ["--prompts", "2", "--seeds", "1", "--batch-size", "2", "--step-counts", "1,2",
        "--speed-calls", "1", "--bootstrap", "200"]  # fmt: skip


def test_default_recipes_are_the_shapes_defaults_of_every_plugin(manager):
    assert sorted(default_recipes(manager)) == ["broken-shapes", "toy-gan-shapes", "toy-shapes"]


@pytest.mark.slow
def test_compare_runs_every_shapes_default_and_skips_the_unbuildable(manager, tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(compare_command, ["--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.json", "alignment-vs-speed.png", "attributes.png"} <= names
    for recipe in ("toy-shapes", "toy-gan-shapes"):
        assert {f"samples-{recipe}.png", f"diversity-{recipe}.png"} <= names
    assert {"sweep-steps.png", "sweep-cfg_scale.png"} <= names  # diffusion steps; GAN psi
    report = json.loads((out / "report.json").read_text())
    assert sorted(r["recipe"] for r in report["recipes"]) == ["toy-gan-shapes", "toy-shapes"]
    assert report["skipped"][0]["recipe"] == "broken-shapes"
    assert "no trained weights shipped" in report["skipped"][0]["reason"]
    first = next(r for r in report["recipes"] if r["recipe"] == "toy-shapes")
    assert set(first["alignment"]) == {"overall", "single", "pair"}
    assert {"value", "low", "high", "n"} <= set(first["alignment"]["overall"])
    assert set(first["images_per_second"]) == {"1", "2"}
    assert first["parameters"] > 0 and first["cold_start_seconds"] > 0
    assert first["device"] == "cpu" and first["diversity"] is None  # one seed: undefined
    assert first["training"]["gpu_seconds"] is None  # nothing recorded: "unknown"
    assert [p["value"] for p in first["sweeps"]["steps"]] == [1, 2]
    md = (out / "report.md").read_text()
    assert "`broken-shapes`: CheckpointError" in md and "](alignment-vs-speed.png)" in md
    assert "unknown" in md


def test_compare_one_recipe_writes_report_and_figures_and_a_skip(manager, tmp_path):
    out = tmp_path / "o"
    args = ["toy-shapes", "broken-shapes", "--checkpoint", "toy-gan-shapes=/nowhere"]
    result = CliRunner().invoke(compare_command, [*args, "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "broken-shapes: skipped (CheckpointError: " in result.output
    report = json.loads((out / "report.json").read_text())
    assert [r["recipe"] for r in report["recipes"]] == ["toy-shapes"]
    skipped = {s["recipe"]: s for s in report["skipped"]}
    assert "no trained weights shipped" in skipped["broken-shapes"]["reason"]
    assert skipped["toy-gan-shapes"]["checkpoint"] == "/nowhere"  # takes no checkpoint
    assert "unknown override 'checkpoint'" in skipped["toy-gan-shapes"]["reason"]
    assert {p.name for p in out.iterdir()} == {
        "report.md", "report.json", "alignment-vs-speed.png", "attributes.png",
        "samples-toy-shapes.png", "diversity-toy-shapes.png", "sweep-steps.png",
    }  # fmt: skip
    md = (out / "report.md").read_text()
    assert "| `toy-shapes` | third_party | diffusion |" in md
    assert "](alignment-vs-speed.png)" in md and "[sample grid](samples-toy-shapes.png)" in md


def test_a_bad_recipe_name_is_a_usage_error(manager, tmp_path):
    result = CliRunner().invoke(compare_command, ["toy-shapez", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "unknown recipe 'toy-shapez'" in result.output and "toy-shapes" in result.output
    assert not (tmp_path / "o").exists()


def test_a_non_empty_out_folder_is_refused_without_overwrite(manager, tmp_path):
    (tmp_path / "old.txt").write_text("x")
    result = CliRunner().invoke(compare_command, ["toy-shapes", "--out", str(tmp_path), *TINY])
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = CliRunner().invoke(
        compare_command, ["toy-shapes", "--out", str(tmp_path), "--overwrite", "--no-sweeps", *TINY]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.md").is_file() and (tmp_path / "old.txt").is_file()


def test_a_device_that_is_not_here_is_a_usage_error(manager, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(compare_command, ["--out", str(tmp_path / "o"), "--device", "cuda"])
    assert result.exit_code == 2 and "CUDA is not available" in result.output
