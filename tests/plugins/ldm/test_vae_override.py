"""``vae=``: a standalone VAE decodes in place of the checkpoint's own (A1111's "SD VAE").

Against diffusers: the same tiny random SD pipeline with its ``vae`` swapped for another random
VAE gives the image t2i's ``ldm`` recipe gives with ``vae=`` that VAE's file, in each layout
users hold (a file in diffusers names, a file in CompVis names, a diffusers ``vae/`` folder).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from t2i import Engine
from t2i.checkpoints import CheckpointError
from t2i.engine import EngineError
from t2i.testing import make_manager
from t2i_ldm import plugin

diffusers = pytest.importorskip("diffusers")

MANAGER = make_manager(plugin)
PROMPT, NEGATIVE = "a red cube on top of a blue sphere", "a small dog"


@pytest.fixture(scope="module")
def sd_and_vae(tmp_path_factory, make_tiny_sd, make_tiny_vae):
    """The tiny pipeline (its own VAE visible, std 0.1), another VAE and its three layouts."""
    from t2i_ldm.checkpoint import load_vae_file

    root = tmp_path_factory.mktemp("vae_override")
    pipe, folder = make_tiny_sd(root, vae_std=0.1)
    other = make_tiny_vae(11)
    files = {"diffusers_file": root / "other-vae.safetensors", "folder": root / "other-vae"}
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, files["diffusers_file"])
    other.save_pretrained(files["folder"], safe_serialization=True)
    ours = load_vae_file(files["diffusers_file"], vae_config=_tiny_config(folder))
    files["compvis_file"] = root / "other-vae-compvis.safetensors"
    compvis = {f"first_stage_model.{k}": v.contiguous() for k, v in ours.state_dict().items()}
    save_file(compvis, files["compvis_file"])
    return pipe, folder, other, files


def _tiny_config(folder):
    from t2i_ldm.recipes import load_models

    return load_models(folder).vae.config


def _reference(pipe, vae, seed: int) -> np.ndarray:
    original = pipe.vae
    pipe.vae = vae
    try:
        out = pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=5,
            guidance_scale=6.0,
            height=32,
            width=32,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
        )
    finally:
        pipe.vae = original
    return np.round(out.images[0] * 255).astype(np.int16)


def _ours(folder, seed: int, **build):
    pipe = Engine.build("ldm", plugins=MANAGER, checkpoint=str(folder), **build)
    result = pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        steps=5,
        cfg_scale=6.0,
        seed=seed,
        width=32,
        height=32,
        sampler="euler",
        schedule="linspace",
    )
    return np.asarray(result.images[0]).astype(np.int16), result.infotexts[0]


def _invoke(args: list[str]):
    """``t2i ARGS`` with this module's plugins as the process-wide manager."""
    from click.testing import CliRunner

    from t2i.cli.main import cli
    from t2i.plugins import set_plugin_manager

    previous = set_plugin_manager(MANAGER)
    try:
        return CliRunner().invoke(cli, args)
    finally:
        set_plugin_manager(previous)


@pytest.mark.parametrize("layout", ["diffusers_file", "compvis_file", "folder"])
def test_the_image_is_diffusers_with_its_vae_swapped(sd_and_vae, layout):
    pipe, folder, other, files = sd_and_vae
    seed = int(torch.randint(0, 2**31, (1,)))
    expected = _reference(pipe, other, seed)
    got, _ = _ours(folder, seed, vae=str(files[layout]))
    assert np.abs(got - expected).max() <= 2, "not diffusers' image with the swapped VAE"
    own, _ = _ours(folder, seed)
    assert np.abs(own - expected).mean() > 5  # the override changed the image
    assert expected.std() > 1


def test_the_png_names_the_vae_after_the_model_as_a1111(sd_and_vae):
    from t2i.files import short_hash

    _, folder, _, files = sd_and_vae
    _, info = _ours(folder, 3, vae=str(files["diffusers_file"]))
    vae_hash = short_hash(files["diffusers_file"])
    assert re.fullmatch(r"[0-9a-f]{10}", vae_hash)
    last = info.splitlines()[-1]
    assert f"VAE hash: {vae_hash}, VAE: other-vae.safetensors" in last
    assert last.index("Model:") < last.index("VAE hash:") < last.index("RNG:")
    _, plain = _ours(folder, 3)
    assert "VAE" not in plain.splitlines()[-1]


def test_img2img_encodes_with_the_chosen_vae(sd_and_vae):
    from t2i.payloads import Image

    _, folder, other, files = sd_and_vae
    pipe = Engine.build("ldm", plugins=MANAGER, checkpoint=str(folder), vae=str(files["folder"]))
    decoder = pipe.executor.run(pipe.graph, outputs=["decoder"])["decoder"]["decoder"]
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        mode = other.encode(pixels * 2 - 1).latent_dist.mode()
    expected = mode * other.config.scaling_factor
    got = decoder.encode(Image(pixels)).samples
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    image = pipe(PROMPT, seed=1, width=32, height=32, steps=3).images[0]
    again = pipe(PROMPT, seed=2, init_image=image, strength=0.5, steps=4, width=32, height=32)
    assert again.images[0].size == (32, 32)


def test_a_vae_of_other_latents_is_refused_at_build_naming_both(
    sd_and_vae, tmp_path, make_tiny_vae
):
    _, folder, _, _ = sd_and_vae
    wide = tmp_path / "sd3-like-vae.safetensors"
    state = make_tiny_vae(1, latent_channels=16).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, wide)
    with pytest.raises(CheckpointError, match=r"16-channel latents.*4-channel") as err:
        Engine.build("ldm", plugins=MANAGER, checkpoint=str(folder), vae=str(wide))
    assert "sd3-like-vae" in str(err.value) and "use a VAE made for" in str(err.value)


def test_missing_and_non_vae_files_get_clear_errors(sd_and_vae, tmp_path):
    _, folder, _, _ = sd_and_vae
    with pytest.raises(CheckpointError, match="no such VAE file"):
        Engine.build("ldm", plugins=MANAGER, checkpoint=str(folder), vae=str(tmp_path / "x"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="holds no VAE weights"):
        Engine.build("ldm", plugins=MANAGER, checkpoint=str(folder), vae=str(empty))
    unet = tmp_path / "unet.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, unet)
    with pytest.raises(CheckpointError, match="not a KL VAE"):
        Engine.build("ldm", plugins=MANAGER, checkpoint=str(folder), vae=str(unet))
    with pytest.raises(EngineError, match="option vae=3 is invalid"):
        Engine.build("ldm", plugins=MANAGER, checkpoint=str(folder), vae=3)


def test_an_export_made_without_the_vae_refuses_it_as_ignored(sd_and_vae):
    """A runtime whose export provides the decoder decodes with the VAE exported; a vae= the
    export was not made with would be silently ignored, so it is refused (the round trip of
    an export made with vae= is in tests/plugins/onnx/test_ldm.py)."""
    _, folder, _, files = sd_and_vae
    deployed = {"provided": ("decoder",), "graph": {"meta": {"infotext": {}}}}
    with pytest.raises(EngineError, match="would be ignored"):
        Engine.build(
            "ldm",
            plugins=MANAGER,
            checkpoint=str(folder),
            vae=str(files["folder"]),
            deployed=deployed,
        )


def test_t2i_generate_option_vae_writes_it_into_the_png(sd_and_vae, tmp_path):
    from PIL import Image as PILImage

    _, folder, _, files = sd_and_vae
    out = tmp_path / "out.png"
    args = ["generate", PROMPT, "--recipe", "ldm", "--checkpoint", str(folder)]
    args += ["--option", f"vae={files['folder']}", "--width", "32", "--height", "32"]
    args += ["--steps", "3", "--seed", "5", "-o", str(out)]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    assert "VAE: other-vae," in PILImage.open(out).info["parameters"]


def test_an_sdxl_checkpoint_keeps_its_scaling_and_upcast_with_another_vae(
    tiny_sdxl, tmp_path, make_tiny_vae
):
    """A standalone file stores neither: SDXL's 0.13025 and force_upcast come from the
    checkpoint, and the image is diffusers' SDXL pipeline with its vae swapped."""
    pipe, folder, _ = tiny_sdxl
    other = make_tiny_vae(5)
    other.register_to_config(scaling_factor=0.13025, force_upcast=True)
    file = tmp_path / "sdxl-vae.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, file)
    seed = int(torch.randint(0, 2**31, (1,)))
    expected = _reference(pipe, other, seed)
    built = Engine.build("ldm", plugins=MANAGER, checkpoint=str(folder), vae=str(file))
    decoder = built.executor.run(built.graph, outputs=["decoder"])["decoder"]["decoder"]
    assert decoder.scaling_factor == 0.13025 and decoder.vae.config.force_upcast
    got, _ = _ours(folder, seed, vae=str(file))
    assert np.abs(got - expected).max() <= 2 and expected.std() > 1


def test_an_xyz_vae_axis_compares_vaes_on_one_checkpoint(sd_and_vae, tmp_path):
    """``t2i generate --xyz "vae=Automatic,FILE"``: A1111's VAE axis, each cell the image
    its single run gives, labelled by file name."""
    from PIL import Image as PILImage

    from t2i.infotext import parse_infotext

    _, folder, _, files = sd_and_vae
    out = tmp_path / "plot"
    args = ["generate", PROMPT, "--recipe", "ldm", "--checkpoint", str(folder), "--steps", "5"]
    args += ["--width", "32", "--height", "32", "--seed", "9", "--sampler", "euler"]
    args += ["--negative", NEGATIVE, "--cfg", "6", "--schedule", "linspace"]
    args += ["--xyz", f"vae=Automatic,{files['diffusers_file']}", "-o", str(out)]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    cells = sorted(p for p in out.glob("*.png") if "grid" not in p.name)
    assert len(cells) == 2, sorted(p.name for p in out.iterdir())
    infos = [parse_infotext(PILImage.open(c).info["parameters"]) for c in cells]
    assert "VAE" not in infos[0] and infos[1]["VAE"] == "other-vae.safetensors"
    own, _ = _ours(folder, 9)
    chosen, _ = _ours(folder, 9, vae=str(files["diffusers_file"]))
    for cell, expected in zip(cells, (own, chosen)):
        got = np.asarray(PILImage.open(cell).convert("RGB")).astype(np.int16)
        assert np.abs(got - expected).max() == 0


def test_automatic_takes_the_vae_named_after_a_single_file_as_a1111(sd_and_vae, tmp_path):
    """``MODEL.vae.safetensors`` beside ``MODEL.safetensors`` decodes by default (and with
    ``vae="Automatic"``); ``vae="None"`` keeps the checkpoint's own; a ``.vae.pt`` needs
    ``allow_pickle``."""
    from t2i_ldm.checkpoint import save_single_file
    from t2i_ldm.recipes import load_models

    _, folder, _, files = sd_and_vae
    models = load_models(folder)
    te = {k: models.text_encoder.get(k) for k in models.text_encoder.keys()}
    single = save_single_file(
        tmp_path / "model.safetensors", models.unet, models.vae, text_encoder=te,
        prediction_type="epsilon",
    )  # fmt: skip
    build = {"tokenizer": str(folder / "tokenizer"), "text_head_dim": 16}
    own, plain_info = _ours(single, 4, **build)
    (tmp_path / "model.vae.pt").write_bytes(b"not read without allow_pickle")
    assert np.array_equal(_ours(single, 4, **build)[0], own)
    beside = tmp_path / "model.vae.safetensors"
    beside.write_bytes(files["diffusers_file"].read_bytes())
    chosen, _ = _ours(folder, 4, vae=str(files["diffusers_file"]))
    for vae in (None, "Automatic"):
        got, info = _ours(single, 4, **build, **({"vae": vae} if vae else {}))
        assert np.abs(got - chosen).max() <= 2 and "VAE: model.vae.safetensors" in info
    got, info = _ours(single, 4, **build, vae="None")
    assert np.array_equal(got, own) and "VAE" not in info.splitlines()[-1]
    assert "VAE" not in plain_info.splitlines()[-1]
