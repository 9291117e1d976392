"""The embedded dalle-shapes default: small safetensors, and a prompt the judge reads right.

Skips cleanly when the shipped folder is absent (an install without the trained weights).
"""

import pytest
from t2i_dalle import plugin
from t2i_dalle.recipes import WEIGHTS_DIR

from t2i import Engine
from t2i.testing import judged_right, make_manager

FILES = ("dalle.json", "dvae.safetensors", "transformer.safetensors")
shipped = pytest.mark.skipif(
    not all((WEIGHTS_DIR / f).is_file() for f in FILES),
    reason="dalle-shapes weights are not installed",
)


@shipped
def test_shipped_files_are_small_safetensors():
    files = sorted(p.name for p in WEIGHTS_DIR.iterdir())
    assert files == ["dalle.json", "dvae.safetensors", "transformer.safetensors"]
    assert all((WEIGHTS_DIR / f).stat().st_size < 16 * 2**20 for f in files)


@shipped
@pytest.mark.slow
def test_the_readme_prompt_is_judged_correct_for_most_seeds():
    prompt = "a small blue triangle at the top"
    images = Engine.build("dalle-shapes", plugins=make_manager(plugin))(
        prompt, seed=0, batch_size=4
    ).images
    right = judged_right(prompt, images)
    assert sum(right) >= 3, right


def test_without_weights_the_recipe_says_how_to_get_them(monkeypatch, tmp_path):
    from t2i_dalle import recipes

    from t2i.checkpoints import CheckpointError

    monkeypatch.setattr(recipes, "WEIGHTS_DIR", tmp_path / "none")
    with pytest.raises(CheckpointError, match=r"(?s)no trained weights.*t2i train dalle"):
        Engine.build("dalle-shapes", plugins=make_manager(plugin))
