"""Inpainting through the standard img2img graph (``t2i.recipe.diffusion_recipe``) on the toy
diffusion recipe, whose decoder is the identity (the sample is the image; the core's ``euler``
sampler, as the toy's own ignores an init sample): the latent blend,
the paste-back, each masked-content mode, "only masked", the request's checks, the infotext."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from t2i import Engine
from t2i.request import RequestError
from t2i.testing import make_manager, toy_plugin

SIZE = 16


@pytest.fixture(scope="module")
def pipe():
    return Engine.build("toy-diffusion", plugins=make_manager(toy_plugin))


@pytest.fixture(scope="module")
def init():
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def _mask(box=(4, 4, 12, 12), size=(SIZE, SIZE)):
    m = Image.new("L", size, 0)
    m.paste(255, box)
    return m


def _run(pipe, init, **fields):
    fields = {"width": SIZE, "height": SIZE, "seed": 1, "steps": 4, "strength": 0.9, **fields}
    fields.setdefault("sampler", "euler")  # the core's sampler (toy.euler ignores the init)
    return pipe("a cube", init_image=init, **fields)


def _pixels(result, i=0):
    return np.asarray(result.images[i]).astype(int)


def test_outside_the_mask_stays_the_init_image_inside_changes(pipe, init):
    out = _run(pipe, init, mask=_mask(), mask_blur=0)
    diff = np.abs(_pixels(out) - np.asarray(init).astype(int))
    inside = np.zeros((SIZE, SIZE), bool)
    inside[4:12, 4:12] = True
    assert diff[~inside].max() == 0 and diff[inside].mean() > 10
    plain = _run(pipe, init)  # the same request without a mask repaints everything
    assert np.abs(_pixels(plain) - np.asarray(init).astype(int))[~inside].mean() > 10


def test_the_sampler_blends_every_step_without_the_paste_back(pipe, init):
    """With the paste-back off, the identity decoder shows the latent blend alone: the
    prediction outside the mask is the init sample after every step (A1111's rule)."""
    graph = pipe.recipe.img2img_graph
    graph.set_params("paste", overlay=False)
    try:
        out = _run(pipe, init, mask=_mask(), mask_blur=0)
        graph.set_params("mask_latent", blend=False)
        unblended = _run(pipe, init, mask=_mask(), mask_blur=0)
    finally:
        graph.set_params("paste", overlay=True)
        graph.set_params("mask_latent", blend=True)
    diff = np.abs(_pixels(out) - np.asarray(init).astype(int))
    assert diff[:4].max() <= 1 and diff[4:12, 4:12].mean() > 10
    assert np.abs(_pixels(unblended) - np.asarray(init).astype(int))[:4].mean() > 10


def test_inverted_mask_repaints_the_rest(pipe, init):
    out = _run(pipe, init, mask=_mask(), mask_blur=0, inpainting_mask_invert=1)
    diff = np.abs(_pixels(out) - np.asarray(init).astype(int))
    assert diff[4:12, 4:12].max() == 0 and diff[:4].mean() > 10
    assert "Mask mode: Inpaint not masked" in out.infotexts[0]


@pytest.mark.parametrize("fill", ["fill", "original", "latent noise", "latent nothing"])
def test_each_masked_content_mode(pipe, init, fill):
    out = _run(pipe, init, mask=_mask(), mask_blur=0, inpainting_fill=fill)
    diff = np.abs(_pixels(out) - np.asarray(init).astype(int))
    assert diff[:4].max() == 0  # outside the mask: the init image, whatever the mode
    text = out.infotexts[0]
    assert ("Masked content" in text) == (fill != "original")
    if fill != "original":
        assert f"Masked content: {fill}" in text


def test_masked_content_modes_start_from_different_samples(pipe, init):
    """At a low strength the start sample shows through: each mode gives another image."""
    outs = {
        fill: _pixels(
            _run(pipe, init, mask=_mask(), mask_blur=0, inpainting_fill=fill, strength=0.3)
        )
        for fill in range(4)
    }
    inside = (slice(4, 12), slice(4, 12))
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(outs[a][inside] - outs[b][inside]).mean() > 1, (a, b)


def test_latent_nothing_starts_from_zeros_in_the_mask(pipe, init):
    """At strength 0 nothing is sampled: the start sample (zeros in the mask) is the image."""
    graph = pipe.recipe.img2img_graph
    graph.set_params("paste", overlay=False)
    try:
        out = _run(pipe, init, mask=_mask(), mask_blur=0, inpainting_fill=3, strength=0.0)
    finally:
        graph.set_params("paste", overlay=True)
    assert (_pixels(out)[4:12, 4:12] == 128).all()  # sample 0 is grey in [-1, 1] pixels
    assert (_pixels(out)[:4] == np.asarray(init)[:4]).all()


def test_only_masked_samples_the_crop_and_pastes_it_back(pipe):
    big = Image.new("RGB", (48, 32), (20, 120, 200))
    mask = _mask((30, 10, 38, 18), (48, 32))
    out = pipe(
        "a cube",
        init_image=big,
        mask=mask,
        mask_blur=0,
        inpaint_full_res=True,
        inpaint_full_res_padding=2,
        width=16,
        height=16,
        seed=2,
        steps=4,
        sampler="euler",
        strength=0.9,
    )
    image = _pixels(out)
    assert out.images[0].size == (48, 32)  # the init image's size, not the request's
    diff = np.abs(image - np.asarray(big).astype(int))
    outside = np.ones((32, 48), bool)
    outside[10:18, 30:38] = False
    assert diff[outside].max() == 0 and diff[10:18, 30:38].mean() > 10
    text = out.infotexts[0]
    assert "Inpaint area: Only masked" in text and "Masked area padding: 2" in text


def test_blurred_mask_feathers_the_edge_and_is_written(pipe, init):
    out = _run(pipe, init, mask=_mask(), mask_blur=2)
    diff = np.abs(_pixels(out) - np.asarray(init).astype(int))
    assert diff[0].max() <= 2  # 4 pixels off the mask: the blur's tail only
    sharp = _run(pipe, init, mask=_mask(), mask_blur=0)
    assert np.abs(_pixels(out) - _pixels(sharp)).max() > 0
    assert "Mask blur: 2" in out.infotexts[0] and "Denoising strength: 0.9" in out.infotexts[0]
    assert out.metadata["parameters"]["mask"] == "<image>"


def test_a_mask_of_another_size_is_refused_naming_both_sizes(pipe, init):
    with pytest.raises(RequestError, match=r"mask: is 8x8 but the init image is 16x16"):
        _run(pipe, init, mask=Image.new("L", (8, 8)))


def test_mask_needs_an_init_image_and_valid_options(pipe, init):
    with pytest.raises(RequestError, match="mask: inpainting needs an init image"):
        pipe("a cube", mask=_mask(), width=SIZE, height=SIZE)
    with pytest.raises(RequestError, match="inpainting_fill"):
        _run(pipe, init, mask=_mask(), inpainting_fill="blur")
    with pytest.raises(RequestError, match="mask_blur"):
        _run(pipe, init, mask=_mask(), mask_blur=-1)
    with pytest.raises(RequestError, match=r"mask: .*cannot be decoded"):
        _run(pipe, init, mask="/nonexistent/mask.png")


def test_a_recipe_without_an_img2img_graph_refuses_a_mask():
    gan = Engine.build("toy-gan", plugins=make_manager(toy_plugin))
    with pytest.raises(RequestError, match=r"init_image|mask"):
        gan("x", init_image=Image.new("RGB", (8, 8)), mask=Image.new("L", (8, 8)))


@pytest.mark.parametrize("mask", [True, False])
def test_a_batch_starts_every_row_from_the_init_image(pipe, init, mask):
    """Row i of a batch is the single run of seed + i (inpainting and plain img2img)."""
    fields = {"mask": _mask(), "mask_blur": 0, "inpainting_fill": 2} if mask else {}
    batch = _run(pipe, init, batch_size=2, seed=3, **fields)
    single = _run(pipe, init, seed=4, **fields)
    assert batch.seeds == [3, 4]
    assert np.abs(_pixels(batch, 0) - _pixels(batch, 1)).max() > 0
    assert (_pixels(batch, 1) == _pixels(single)).all()
