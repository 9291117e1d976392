"""The embedded gan-shapes default: small safetensors, and a prompt the judge reads right.

Skips cleanly when the shipped folder is absent (an install without the trained weights).
"""

import pytest
from t2i_gan import plugin
from t2i_gan.recipes import WEIGHTS_DIR

from t2i import Engine
from t2i.checkpoints import CheckpointError
from t2i.testing import judged_right, make_manager

shipped = pytest.mark.skipif(
    not (WEIGHTS_DIR / "model.json").is_file(), reason="gan-shapes weights are not installed"
)


@shipped
def test_shipped_files_are_the_generator_in_small_safetensors():
    files = sorted(p.name for p in WEIGHTS_DIR.iterdir())
    assert files == ["model.json", "netG.safetensors"]
    assert all((WEIGHTS_DIR / f).stat().st_size < 16 * 2**20 for f in files)


@shipped
def test_the_readme_prompt_is_judged_correct_for_most_seeds():
    prompt = "a small blue triangle at the top"
    images = Engine.build("gan-shapes", plugins=make_manager(plugin))(
        prompt, seed=0, batch_size=4
    ).images
    right = judged_right(prompt, images)
    assert sum(right) >= 3, right


def test_without_weights_the_recipe_says_how_to_get_them(monkeypatch, tmp_path):
    from t2i_gan import recipes

    monkeypatch.setattr(recipes, "WEIGHTS_DIR", tmp_path / "none")
    with pytest.raises(CheckpointError, match=r"(?s)no trained weights.*t2i train gan"):
        Engine.build("gan-shapes", plugins=make_manager(plugin))
