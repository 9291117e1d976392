"""ONNX export and ORT inference of the LDM family: the shipped ldm-shapes model (through the
CLI: `t2i export onnx`, `t2i generate --onnx-dir`) and a random-weight tiny SD1 checkpoint.
Each exported model matches its torch module within Optimum's tolerances (UNet 1e-4, VAE
3e-4, text encoder 1e-3, fp32); the final image is within 2/255 of the torch runtime's for the
same seed and sampler; the graphs hold no op ORT cannot run."""

import attrs
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from onnx_checks import custom_domains, example_parity, pixel_distance
from PIL import Image

from t2i.engine import Engine

pytest.importorskip("t2i_ldm", reason="the LDM plugin is not installed (-e plugins/t2i_ldm)")

TOLERANCE = {"unet": 1e-4, "vae_decoder": 3e-4, "vae_encoder": 3e-4}
TEXT_TOLERANCE = 1e-3
SAMPLERS = ("Euler a", "DPM++ 2M Karras")


@pytest.fixture(scope="module", autouse=True)
def manager():
    """The LDM and ONNX plugins as the process-wide manager; the CLI gets their commands."""
    from t2i_onnx import plugin as onnx_plugin

    from t2i.cli.main import cli
    from t2i.plugins import set_plugin_manager
    from t2i.testing import make_manager
    from t2i_ldm import plugin as ldm_plugin

    chosen = make_manager(ldm_plugin, onnx_plugin)
    chosen.register_commands(cli)  # the command hook mounts `t2i export`
    previous = set_plugin_manager(chosen)
    yield chosen
    set_plugin_manager(previous)


@pytest.fixture(scope="module")
def shapes_export(tmp_path_factory):
    from t2i.cli.main import cli

    out = tmp_path_factory.mktemp("onnx-shapes") / "export"
    result = CliRunner().invoke(cli, ["export", "onnx", "ldm-shapes", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exporting unet" in result.output  # progress shown
    return out


@pytest.mark.slow
def test_shapes_models_match_torch(shapes_export):
    errors = example_parity(Engine.build("ldm-shapes"), shapes_export, TOLERANCE, TEXT_TOLERANCE)
    assert set(errors) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    assert custom_domains(shapes_export) == set()
    assert (shapes_export / "tokenizer" / "tokenizer.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_shapes_images_match_torch(shapes_export, sampler):
    fields = {"seed": 21, "steps": 6, "sampler": sampler, "batch_size": 2}
    prompt = "a small blue square on the right"
    expected = Engine.build("ldm-shapes")(prompt, **fields)
    pipe = Engine.build(runtime="onnx", onnx_dir=shapes_export)
    assert "unet" not in pipe.onnx_torch_fallback
    got = pipe(prompt, **fields)
    assert pixel_distance(got.images, expected.images) <= 2
    assert got.infotexts == expected.infotexts


@pytest.mark.slow
def test_shapes_generate_command(shapes_export, tmp_path):
    from t2i.cli.main import cli

    args = ["generate", "a red circle", "--steps", "4", "--seed", "5"]
    runner = CliRunner()
    onnx = runner.invoke(cli, [*args, "--onnx-dir", str(shapes_export), "-o", str(tmp_path / "o")])
    torch_run = runner.invoke(cli, [*args, "--recipe", "ldm-shapes", "-o", str(tmp_path / "t")])
    assert onnx.exit_code == 0 and torch_run.exit_code == 0, onnx.output + torch_run.output
    (a,), (b,) = (sorted((tmp_path / d).glob("*.png")) for d in ("o", "t"))
    assert pixel_distance([Image.open(a).convert("RGB")], [Image.open(b).convert("RGB")]) <= 2
    assert Image.open(a).info["parameters"] == Image.open(b).info["parameters"]


# -- a random-weight tiny SD1 checkpoint ------------------------------------------------------
WORDS = "a red blue cube sphere cat dog photo of the on top left right"


@pytest.fixture(scope="module")
def tiny_sd1(tmp_path_factory):
    """A single-file SD1 checkpoint of random tiny UNet, VAE and CLIP, and its tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from t2i_ldm.checkpoint import save_single_file
    from t2i_ldm.config import TINY_UNET, VAEConfig
    from t2i_ldm.shapes_model import write_tokenizer
    from t2i_ldm.unet import UNetModel
    from t2i_ldm.vae import AutoencoderKL

    torch.manual_seed(int(np.random.default_rng().integers(1 << 16)))
    root = tmp_path_factory.mktemp("sd1")
    tok = write_tokenizer(root / "tokenizer", [WORDS])
    unet = UNetModel(attrs.evolve(TINY_UNET, model_channels=16)).eval()
    vae = AutoencoderKL(
        VAEConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, norm_groups=8)
    ).eval()
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
        )
    )
    for module in (unet, vae):  # zero-initialised output layers would hide a wrong mapping
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    te = {
        k if k.startswith("text_model.") else f"text_model.{k}": v
        for k, v in text.state_dict().items()
    }
    path = save_single_file(
        root / "tiny.safetensors", unet, vae, text_encoder=te, prediction_type="epsilon"
    )
    options = {"checkpoint": str(path), "tokenizer": str(root / "tokenizer"), "text_head_dim": 16}
    return options


@pytest.mark.slow
def test_tiny_sd1_models_and_image_match_torch(tiny_sd1, tmp_path):
    from t2i_onnx.exporter import export_recipe

    out = tmp_path / "sd1"
    manifest = export_recipe("sd", out, options=tiny_sd1)
    assert set(manifest["models"]) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    torch_pipe = Engine.build("sd", **tiny_sd1)
    example_parity(torch_pipe, out, TOLERANCE, TEXT_TOLERANCE)
    assert custom_domains(out) == set()
    fields = {"seed": 4, "steps": 3, "width": 16, "height": 16, "negative_prompt": "a dog"}
    # no emphasis in the prompt: "original" emphasis divides by the chunk's mean state, which
    # is ~0 for a random tiny CLIP (LayerNorm output), so 1e-6 model differences become ~1
    expected = torch_pipe("a red cube", **fields)
    onnx_pipe = Engine.build(runtime="onnx", onnx_dir=out)
    assert onnx_pipe.onnx_torch_built == []
    got = onnx_pipe("a red cube", **fields)
    assert pixel_distance(got.images, expected.images) <= 2
    assert got.infotexts == expected.infotexts


@pytest.mark.slow
def test_an_export_with_a_chosen_vae_decodes_with_it_without_the_file(tiny_sd1, tmp_path):
    """``--option vae=FILE`` at export: the exported decoder is that VAE, the ONNX run gives
    the torch image and PNG fields (VAE hash, VAE) with the file gone."""
    from t2i_onnx.exporter import export_recipe

    from t2i_ldm.checkpoint import load_vae_file
    from t2i_ldm.recipes import load_models

    own = load_models(tiny_sd1["checkpoint"]).vae
    other = load_vae_file(tiny_sd1["checkpoint"], vae_config=own.config)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    vae_file = tmp_path / "my-vae.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, vae_file)
    options = {**tiny_sd1, "vae": str(vae_file)}
    out = tmp_path / "sd1-vae"
    export_recipe("sd", out, options=options)
    fields = {"seed": 6, "steps": 3, "width": 16, "height": 16}
    expected = Engine.build("sd", **options)("a red cube", **fields)
    plain = Engine.build("sd", **tiny_sd1)("a red cube", **fields)
    assert pixel_distance(plain.images, expected.images) > 2  # the chosen VAE shows
    assert "VAE: my-vae.safetensors" in expected.infotexts[0]
    vae_file.unlink()
    got = Engine.build(runtime="onnx", onnx_dir=out)("a red cube", **fields)
    assert pixel_distance(got.images, expected.images) <= 2
    assert got.infotexts == expected.infotexts
