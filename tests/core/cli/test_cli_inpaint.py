"""``t2i generate --init-image X --mask M``: A1111's inpainting controls on the command line."""

import numpy as np
from click.testing import CliRunner
from PIL import Image

from t2i.cli.main import cli
from t2i.outputs import read_infotext


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_generate_inpaints_with_the_mask_options(t2i_manager, tmp_path):
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    init.save(tmp_path / "init.png")
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (4, 4, 12, 12))
    mask.save(tmp_path / "mask.png")
    common = ["generate", "a cube", "--recipe", "toy-diffusion", "--sampler", "euler"]
    common += ["--width", 16, "--height", 16, "--seed", 3, "--init-image", tmp_path / "init.png"]
    out = tmp_path / "out.png"
    ok = invoke(
        *common,
        "--mask",
        tmp_path / "mask.png",
        "--mask-blur",
        0,
        "--masked-content",
        "latent noise",
        "--strength",
        0.9,
        "-o",
        out,
    )
    assert ok.exit_code == 0, ok.output
    diff = np.abs(np.asarray(Image.open(out)).astype(int) - np.asarray(init).astype(int))
    assert diff[:4].max() == 0 and diff[4:12, 4:12].mean() > 10
    text = read_infotext(out)
    assert "Masked content: latent noise" in text and "Mask blur" not in text

    inverted = tmp_path / "inv.png"
    ok = invoke(*common, "--mask", tmp_path / "mask.png", "--inpaint-not-masked", "-o", inverted)
    assert ok.exit_code == 0, ok.output
    assert "Mask mode: Inpaint not masked, " in read_infotext(inverted)
    assert "Mask blur: 4" in read_infotext(inverted)  # A1111's default blur

    crop = tmp_path / "crop.png"
    ok = invoke(
        *common,
        "--mask",
        tmp_path / "mask.png",
        "--only-masked",
        "--only-masked-padding",
        1,
        "-o",
        crop,
    )
    assert ok.exit_code == 0, ok.output
    assert "Inpaint area: Only masked, Masked area padding: 1" in read_infotext(crop)


def test_a_mask_of_another_size_exits_2_naming_both_sizes(t2i_manager, tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "init.png")
    Image.new("L", (32, 24)).save(tmp_path / "mask.png")
    bad = invoke(
        "generate",
        "x",
        "--recipe",
        "toy-diffusion",
        "--init-image",
        tmp_path / "init.png",
        "--mask",
        tmp_path / "mask.png",
        "-o",
        tmp_path / "o.png",
    )
    assert bad.exit_code == 2
    assert "mask: is 32x24 but the init image is 16x16" in bad.output
    assert "give a mask of the init image's size" in bad.output
