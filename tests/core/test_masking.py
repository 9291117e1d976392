"""``t2i.masking``: A1111's inpainting mask processing, checked against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from t2i import masking


def _mask(size, box):
    m = Image.new("L", size, 0)
    m.paste(255, box)
    return m


def test_crop_region_is_the_masked_box_plus_padding_inside_the_image():
    m = _mask((64, 48), (10, 5, 20, 9))  # pixels x 10..19, y 5..8
    assert masking.crop_region(m) == (10, 5, 20, 9)
    assert masking.crop_region(m, 8) == (2, 0, 28, 17)
    assert masking.crop_region(Image.new("L", (8, 8))) is None  # blank: no region


def test_expand_crop_region_matches_the_request_aspect_ratio():
    # A1111's docstring: a 128x32 region processed at 512x512 becomes 128x128
    assert masking.expand_crop_region((100, 100, 228, 132), 512, 512, 512, 512) == (
        100,
        52,
        228,
        180,
    )
    # at the image's edge the box shifts back inside it
    assert masking.expand_crop_region((0, 0, 128, 32), 512, 512, 512, 512) == (0, 0, 128, 128)
    assert masking.expand_crop_region((400, 480, 512, 512), 64, 64, 512, 512) == (
        400,
        400,
        512,
        512,
    )
    # a tall box for a wide request grows in x
    assert masking.expand_crop_region((10, 0, 20, 40), 64, 32, 100, 100) == (0, 0, 80, 40)


def test_blur_kernel_and_reflect_borders():
    kernel, half = masking._gaussian_kernel(4)
    assert len(kernel) == 2 * int(2.5 * 4 + 0.5) + 1 == 21 and half == 10
    assert kernel.sum() == pytest.approx(1.0) and np.allclose(kernel, kernel[::-1])
    m = _mask((40, 40), (15, 15, 25, 25))
    blurred = np.asarray(masking.blur_mask(m, 4)).astype(int)
    # the centre keeps erf(5 / (4 sqrt 2))^2 of the square: 0.62 * 255
    assert blurred[20, 20] == pytest.approx(159, abs=2) and blurred[0, 0] == 0
    assert np.abs(blurred - blurred.T).max() <= 1  # symmetric, up to 8-bit rounding
    assert np.abs(blurred - blurred[::-1, ::-1]).max() <= 1
    assert masking.blur_mask(m, 0) is m
    full = np.asarray(masking.blur_mask(Image.new("L", (12, 12), 255), 8))
    assert (full == 255).all()  # reflect-101 borders: a full mask stays full


def test_blur_matches_opencv_when_installed():
    cv2 = pytest.importorskip("cv2")
    m = _mask((37, 29), (5, 7, 20, 11))
    for r in (1, 3, 4):
        k = 2 * int(2.5 * r + 0.5) + 1
        ref = cv2.GaussianBlur(np.asarray(m), (k, 1), r)
        ref = cv2.GaussianBlur(ref, (1, k), r)
        ours = np.asarray(masking.blur_mask(m, r)).astype(int)
        assert np.abs(ours - ref.astype(int)).max() <= 1


def test_binary_mask_reads_a_painted_alpha():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((1, 2), (0, 0, 0, 200))
    rgba.putpixel((0, 0), (0, 0, 0, 100))
    m = np.asarray(masking.binary_mask(rgba))
    assert m[2, 1] == 255 and m[0, 0] == 0 and m.sum() == 255
    grey = Image.new("RGB", (4, 4), (255, 255, 255))
    assert np.asarray(masking.binary_mask(grey)).min() == 255


def test_fill_keeps_the_unmasked_pixels_and_paints_the_masked_ones():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    m = _mask((32, 32), (8, 8, 24, 24))
    filled = np.asarray(masking.fill_masked(image, m)).astype(int)
    orig = np.asarray(image).astype(int)
    outside = np.asarray(m) == 0
    assert np.abs(filled[outside] - orig[outside]).max() <= 1
    inside = filled[~outside]
    assert inside.std() < orig[~outside].std() / 2  # smooth colours, not the old pixels


def test_latent_mask_is_rounded_bicubic():
    m = _mask((16, 16), (4, 4, 12, 12))
    small = masking.latent_mask(m, 8, 8)
    assert small.shape == (8, 8) and set(np.unique(small)) <= {0.0, 1.0}
    assert small[2:6, 2:6].all() and small[0].sum() == 0


def test_prepare_whole_picture_and_only_masked_geometry():
    image = Image.new("RGB", (64, 32), (10, 20, 30))
    m = _mask((64, 32), (40, 8, 48, 16))
    whole = masking.prepare(image, m, 32, 16, blur=0, padding=0)
    assert whole["image"].size == whole["mask"].size == (32, 16) and whole["box"] is None
    assert whole["base"].size == (32, 16)
    crop = masking.prepare(image, m, 16, 16, blur=0, padding=4, only_masked=True)
    assert crop["box"] == (36, 4, 52, 20)  # 8x8 + 4 each side, square like the request
    assert crop["image"].size == crop["mask"].size == (16, 16)
    assert crop["base"] is image and crop["overlay"].size == (64, 32)
    assert masking.prepare(image, Image.new("L", (64, 32)), 16, 16, only_masked=True) is None
    with pytest.raises(ValueError, match="mask is 8x8 but the init image is 64x32"):
        masking.prepare(image, Image.new("L", (8, 8)), 16, 16)


def test_paste_back_puts_the_result_in_the_box_and_keeps_the_rest():
    base = Image.new("RGB", (40, 30), (0, 0, 255))
    overlay = _mask((40, 30), (12, 10, 20, 18))
    generated = Image.new("RGB", (16, 16), (255, 0, 0))
    out = np.asarray(masking.paste_back(generated, base, overlay, (8, 6, 24, 22)))
    assert (out[14, 16] == (255, 0, 0)).all()  # masked: generated
    assert (out[7, 9] == (0, 0, 255)).all()  # in the box but not masked: base
    assert (out[0, 0] == (0, 0, 255)).all()


def test_fill_mode_names_and_indices():
    assert masking.fill_mode("latent noise") == 2 == masking.fill_mode(2)
    with pytest.raises(ValueError, match="inpainting_fill"):
        masking.fill_mode("blur")
