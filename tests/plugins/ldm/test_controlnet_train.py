"""``t2i train controlnet``: a ControlNet for a frozen SD checkpoint on the core loop. The
start is the checkpoint itself (zero residuals, the UNet's encoder copied as diffusers'
``ControlNetModel.from_unet``); training lowers the loss on its data; the export loads with
``controlnet=`` and resumes; bad data is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from t2i import Engine
from t2i.testing import make_manager
from t2i.training import TrainConfig
from t2i_ldm import plugin
from t2i_ldm.controlnet_checkpoint import load_controlnet
from t2i_ldm.controlnet_train import (
    ControlNetTraining,
    controlnet_from_unet,
    encode,
    read_pairs,
)
from t2i_ldm.diffusers_format import unet_config_from_diffusers

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(autouse=True)
def ldm_plugins():
    """The process-wide manager with the ldm plugin (the trainer builds the checkpoint's
    recipe, the CLI lists the trainer)."""
    from t2i.plugins import set_plugin_manager

    old = set_plugin_manager(make_manager(plugin))
    yield
    set_plugin_manager(old)


@pytest.fixture(scope="module")
def sd(tmp_path_factory, make_tiny_sd):
    root = tmp_path_factory.mktemp("cn_train")
    pipe, folder = make_tiny_sd(root, vae_std=0.1)
    return pipe, folder


def _data(folder, n=4, maps=True):
    """Squares at places the map shows (its outline) with a caption each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        image = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 80, 3)))
        x, y = (int(v) for v in rng.integers(4, 36, 2))
        image.paste((220, 40, 40), (x, y, x + 24, y + 24))
        image.save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text("a red cube")
        if maps:
            control = Image.new("RGB", (64, 64))
            control.paste((255, 255, 255), (x, y, x + 24, y + 24))
            control.save(folder / f"img{i}.control.png")
    return folder


def test_the_start_is_the_checkpoint_and_the_encoder_is_copied(sd, tmp_path):
    pipe, _ = sd
    from t2i_ldm.diffusers_format import load_diffusers_unet

    unet = pipe.unet
    unet.save_pretrained(tmp_path / "unet")
    ours_unet = load_diffusers_unet(tmp_path / "unet")
    net = controlnet_from_unet(ours_unet, (16, 32))
    ref = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    x, hint = torch.randn(2, 4, 8, 8), torch.rand(2, 3, 16, 16)
    t, ctx = torch.tensor([500.0, 20.0]), torch.randn(2, 7, 32)
    with torch.no_grad():
        residuals = net(x, hint, t, ctx)
        down, mid = ref(x, t, ctx, hint, return_dict=False)
        plain = ours_unet(x, t, ctx)
        steered = ours_unet(x, t, ctx, control=residuals)
    assert all(float(r.abs().max()) == 0 for r in residuals)
    assert all(float(r.abs().max()) == 0 for r in [*down, mid])  # diffusers: zero too
    torch.testing.assert_close(steered, plain)
    for key in ("input_blocks.1.0.in_layers.2.weight", "time_embed.0.weight"):
        torch.testing.assert_close(net.state_dict()[key], ours_unet.state_dict()[key])


def test_training_lowers_the_loss_and_the_export_loads(sd, tmp_path):
    pipe, folder = sd
    data = _data(tmp_path / "data")
    pairs = read_pairs(data, 64, None)
    denoiser, encoded = encode(str(folder), pairs, torch.device("cpu"))

    def fixed_loss(net):
        torch.manual_seed(123)
        model = ControlNetTraining(denoiser, net, encoded)
        with torch.no_grad():
            return float(sum(model.loss(torch.arange(4)) for _ in range(8)) / 8)

    start = fixed_loss(controlnet_from_unet(denoiser.unet, (16, 32)))
    out = tmp_path / "run"
    runner = CliRunner()
    from t2i.cli.main import cli

    args = ["train", "controlnet", "--out", str(out), "--checkpoint", str(folder), "--data",
            str(data), "--size", "64", "--steps", "40", "--batch-size", "4", "--lr", "3e-3",
            "--device", "cpu", "--save-every", "20"]  # fmt: skip
    result = runner.invoke(cli, args, obj=None, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    exported = out / "model" / "controlnet.safetensors"
    config = unet_config_from_diffusers(dict(pipe.unet.config))
    trained = load_controlnet(exported, config)
    assert fixed_loss(trained) < start  # the map now helps predict the noise
    assert (out / "controlnet.state.pt").is_file()
    steered = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder),
                           controlnet=str(exported))  # fmt: skip
    image = Image.open(data / "img0.control.png")
    assert steered("a red cube", control_image=image, steps=2, width=64, height=64).images
    again = runner.invoke(cli, [*args[:-6], "--steps", "50", "--batch-size", "4",
                                "--device", "cpu"], catch_exceptions=False)  # fmt: skip
    assert again.exit_code == 0, again.output  # resumed from step 40


def test_bad_data_is_refused_clearly(sd, tmp_path):
    from t2i.training.config import TrainOptionsError
    from t2i_ldm.controlnet_train import train_controlnet

    _, folder = sd
    config = TrainConfig(name="controlnet", steps=1, batch_size=1, device="cpu")
    no_maps = _data(tmp_path / "no_maps", n=1, maps=False)
    with pytest.raises(TrainOptionsError, match=r"no control map img0\.control\.png"):
        train_controlnet(config, tmp_path / "o", checkpoint=str(folder), data=str(no_maps),
                         size=64)  # fmt: skip
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainOptionsError, match="holds no images"):
        train_controlnet(config, tmp_path / "o", checkpoint=str(folder),
                         data=str(tmp_path / "empty"), size=64)  # fmt: skip
    with pytest.raises(TrainOptionsError, match="multiple of 16"):
        train_controlnet(config, tmp_path / "o", checkpoint=str(folder), data=str(no_maps),
                         size=40)  # fmt: skip
    (no_maps / "img0.txt").unlink()
    with pytest.raises(TrainOptionsError, match="no caption"):
        train_controlnet(config, tmp_path / "o", checkpoint=str(folder), data=str(no_maps),
                         size=64, preprocessor="invert")  # fmt: skip


def test_ldm_shapes_takes_a_controlnet_made_from_its_unet(tmp_path):
    """The embedded ldm-shapes model (context pooling in its timestep embedding, copied into
    the ControlNet too): a fresh ControlNet (zero residuals) leaves its image unchanged."""
    from t2i_ldm.controlnet_checkpoint import save_controlnet

    plain = Engine.build("ldm-shapes", plugins=make_manager(plugin))
    parts = plain.executor.run(plain.graph, outputs=["denoiser"])
    unet = parts["denoiser"]["model"].unet
    net = controlnet_from_unet(unet, (16, 32, 96))
    assert net.context_pool is not None
    torch.testing.assert_close(net.context_pool.to_q.weight, unet.context_pool.to_q.weight)
    path = save_controlnet(tmp_path / "fresh.safetensors", net)
    steered = Engine.build("ldm-shapes", plugins=make_manager(plugin), controlnet=str(path))
    run = {"steps": 4, "seed": 3}
    image = steered("a red circle", control_image=Image.new("RGB", (64, 64)), **run).images[0]
    assert np.array_equal(np.asarray(image), np.asarray(plain("a red circle", **run).images[0]))
