import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from t2i.cli.shapes import eval_command
from t2i.plugins import get_plugin_manager, set_plugin_manager
from t2i.shapes import oracle
from t2i.shapes.evaluate import (
    PROMPT_SET_VERSION,
    evaluate,
    evaluate_recipe,
    prompt_set,
    write_report,
)
from t2i.shapes.judge import load_judge
from t2i.shapes.splits import is_heldout
from t2i.testing import make_manager


@pytest.fixture(scope="module")
def judge():
    return load_judge()


def grey(prompt, seeds):
    return [Image.new("RGB", (64, 64), (128, 128, 128)) for _ in seeds]


def noise(prompt, seeds):
    return [Image.fromarray(np.random.default_rng(s).integers(0, 256, (64, 64, 3), np.uint8))
            for s in seeds]  # fmt: skip


def test_prompt_set_is_fixed_balanced_and_from_test_split():
    a, b = prompt_set(10), prompt_set(16)
    assert [p.text for p in a] == [p.text for p in b[:10]]
    assert [p.stated.kind for p in a] == ["single", "pair"] * 5
    assert any(is_heldout(p.scene) for p in b)


def test_real_renders_align_and_noise_and_grey_do_not(judge):
    prompts = prompt_set(32)
    seeds = [0, 1]
    real, _ = evaluate(oracle.oracle_images, prompts, seeds, judge=judge, progress=False)
    g, _ = evaluate(grey, prompts, seeds, judge=judge, progress=False, keep_images=False)
    n, _ = evaluate(noise, prompts, seeds, judge=judge, progress=False, keep_images=False)
    assert real.alignment["overall"] >= 0.99
    assert real.alignment["single"] >= 0.99 and real.alignment["pair"] >= 0.99
    assert g.alignment["overall"] <= 0.15 and n.alignment["overall"] <= 0.15
    assert real.frechet_distance < g.frechet_distance and real.frechet_distance < n.frechet_distance
    assert g.diversity == pytest.approx(0.0, abs=1e-6) and real.diversity > 0


def test_report_is_reproducible_and_written(judge, tmp_path):
    prompts = prompt_set(6)
    r1, images = evaluate(oracle.oracle_images, prompts, [5, 6], judge=judge, progress=False)
    r2, _ = evaluate(oracle.oracle_images, prompts, [5, 6], judge=judge, progress=False)
    d1, d2 = r1.to_dict(), r2.to_dict()
    d1.pop("images_per_second"), d2.pop("images_per_second")
    assert d1 == d2
    write_report(r1, tmp_path, images, prompts)
    report = json.loads((tmp_path / "report.json").read_text())
    keys = ("alignment", "per_attribute", "frechet_distance", "diversity", "images_per_second")
    keys += ("parameters", "prompt_set_version", "seeds", "options")
    assert set(keys) <= set(report)
    assert report["prompt_set_version"] == PROMPT_SET_VERSION
    assert "| alignment (overall) |" in (tmp_path / "report.md").read_text()
    assert Image.open(tmp_path / "samples.png").size[0] > 64


def test_generate_must_return_one_image_per_seed(judge):
    with pytest.raises(ValueError, match="one PIL image per seed"):
        evaluate(lambda p, s: [], prompt_set(2), [0], judge=judge, progress=False)


@pytest.fixture
def oracle_manager():
    previous = get_plugin_manager()
    manager = make_manager(oracle)
    set_plugin_manager(manager)
    yield manager
    set_plugin_manager(previous)


def test_oracle_recipe_through_the_engine(oracle_manager, judge, tmp_path):
    report = evaluate_recipe("shapes-oracle", n_prompts=6, n_seeds=2, batch_size=1, judge=judge,
                             out=tmp_path, progress=False)  # fmt: skip
    assert report.alignment["overall"] >= 0.99
    assert report.options["recipe"] == "shapes-oracle" and report.seeds == [0, 1]
    assert (tmp_path / "samples.png").exists()


def test_eval_command(oracle_manager, tmp_path):
    out = tmp_path / "ev"
    result = CliRunner().invoke(
        eval_command, ["shapes-oracle", "--out", str(out), "--prompts", "4", "--seeds", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "alignment overall=1.000" in result.output
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "samples.png"}


def test_eval_command_passes_the_device_to_the_engine(oracle_manager, tmp_path):
    args = ["shapes-oracle", "--out", str(tmp_path), "--prompts", "2", "--seeds", "1"]
    result = CliRunner().invoke(eval_command, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "report.json").read_text())["options"]["device"] == "cpu"
