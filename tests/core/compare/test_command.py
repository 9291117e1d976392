"""``t2i compare`` end to end on toy recipes, with tiny counts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from t2i.cli.compare import compare_command
from t2i.compare.markdown import to_markdown
from t2i.compare.recipes import default_recipes

TINY = ["--prompts", "2", "--seeds", "1", "--batch-size", "2", "--step-counts", "1,2",
        "--speed-calls", "1", "--bootstrap", "200"]  # fmt: skip


def test_default_recipes_are_the_shapes_defaults_of_every_plugin(manager):
    assert sorted(default_recipes(manager)) == [
        "broken-shapes", "toy-ar-shapes", "toy-gan-shapes", "toy-shapes",
    ]  # fmt: skip


@pytest.mark.slow
def test_compare_runs_every_shapes_default_and_skips_the_unbuildable(manager, tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(compare_command, ["--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.json", "alignment-vs-speed.png", "attributes.png"} <= names
    for recipe in ("toy-shapes", "toy-gan-shapes", "toy-ar-shapes"):
        assert {f"samples-{recipe}.png", f"diversity-{recipe}.png"} <= names
    sweeps = {"sweep-steps.png", "sweep-cfg_scale.png", "sweep-temperature.png", "sweep-top_k.png"}
    assert sweeps <= names  # diffusion steps, GAN psi, token sampler fields
    report = json.loads((out / "report.json").read_text())
    ran = sorted(r["recipe"] for r in report["recipes"])
    assert ran == ["toy-ar-shapes", "toy-gan-shapes", "toy-shapes"]
    assert len(report["differences"]) == 3 * 10  # 3 pairs x (3 alignment + 7 attributes)
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


@pytest.fixture(scope="module")
def one_recipe(manager, tmp_path_factory):
    """``t2i compare toy-shapes broken-shapes --checkpoint toy-gan-shapes=/nowhere``, once."""
    out = tmp_path_factory.mktemp("cmp") / "o"
    args = ["toy-shapes", "broken-shapes", "--checkpoint", "toy-gan-shapes=/nowhere"]
    result = CliRunner().invoke(compare_command, [*args, "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_compare_one_recipe_writes_report_and_figures(one_recipe):
    out, _ = one_recipe
    assert {p.name for p in out.iterdir()} == {
        "report.md", "report.json", "alignment-vs-speed.png", "attributes.png",
        "samples-toy-shapes.png", "diversity-toy-shapes.png", "sweep-steps.png",
    }  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert [r["recipe"] for r in report["recipes"]] == ["toy-shapes"]
    md = (out / "report.md").read_text()
    assert "| `toy-shapes` | third_party | diffusion |" in md
    assert "](alignment-vs-speed.png)" in md and "[sample grid](samples-toy-shapes.png)" in md


def test_compare_lists_unbuildable_recipes_as_skipped_with_the_reason(one_recipe):
    out, output = one_recipe
    assert "broken-shapes: skipped (CheckpointError: " in output
    skipped = {s["recipe"]: s for s in json.loads((out / "report.json").read_text())["skipped"]}
    assert "no trained weights shipped" in skipped["broken-shapes"]["reason"]
    assert skipped["toy-gan-shapes"]["checkpoint"] == "/nowhere"  # takes no checkpoint
    assert "unknown override 'checkpoint'" in skipped["toy-gan-shapes"]["reason"]
    assert "- `broken-shapes`: CheckpointError: " in (out / "report.md").read_text()


def test_report_md_lists_the_significant_differences(one_recipe):
    report = json.loads((one_recipe[0] / "report.json").read_text())
    iv = {"value": 0.5, "low": 0.2, "high": 0.8, "n": 8}
    report["differences"] = [
        {"figure": "pair", "a": "x", "b": "y", "difference": iv, "significant": True},
        {"figure": "overall", "a": "x", "b": "y", "difference": iv, "significant": False},
        {"figure": "size", "a": "x", "b": "y", "difference": iv, "significant": False,
         "testable": False},
    ]  # fmt: skip
    md = to_markdown(report)
    assert "1 of 2 paired differences tested are significant" in md
    assert "1 differences rest on fewer than 8 prompts and are not tested" in md
    assert "- pair: `x` - `y` = 0.500 [0.20, 0.80]" in md and "- overall:" not in md


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


def test_nothing_measured_still_writes_the_report_and_exits_1(manager, tmp_path):
    result = CliRunner().invoke(compare_command, ["broken-shapes", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "no recipe could be measured" in result.output
    assert "- `broken-shapes`: CheckpointError: " in (tmp_path / "o" / "report.md").read_text()
