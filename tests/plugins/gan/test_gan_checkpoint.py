"""Loading DF-GAN's released layout and our folders; another family's files are refused."""

import json

import pytest
import torch
from t2i_gan.checkpoint import infer_config, load_gan
from t2i_gan.models import GanConfig, NetC, NetD, NetG
from t2i_gan.trainable import GanTrainable

from t2i.checkpoints import CheckpointError, save_safetensors

DFGAN_64 = GanConfig(nf=4, z_dim=100, cond_dim=256, image_size=64)  # DF-GAN's z and DAMSM


def _dfgan_file(path, config=DFGAN_64, *, prefix="", extra=None):
    """A random-weight file in DF-GAN's released layout (``torch.save`` of nested dicts)."""
    torch.manual_seed(0)
    nets = {"netG": NetG(config), "netD": NetD(config), "netC": NetC(config)}
    for net in nets.values():
        for p in net.parameters():
            p.data.normal_()
    model = {k: {prefix + n: t for n, t in v.state_dict().items()} for k, v in nets.items()}
    if extra:
        model["netG"].update(extra)
    optim = torch.optim.Adam(nets["netG"].parameters())
    torch.save(
        {"model": model, "optimizers": {"optimizer_G": optim.state_dict()}, "epoch": 3}, path
    )
    return nets


@pytest.mark.parametrize("prefix", ["", "module."])
def test_a_dfgan_file_loads_with_every_key_accounted_for(tmp_path, prefix):
    path = tmp_path / "state_epoch_003.pth"
    nets = _dfgan_file(path, prefix=prefix)
    loaded = load_gan(path, allow_pickle=True)
    assert loaded.config == DFGAN_64
    for part, net in nets.items():
        mine = getattr(loaded, part).state_dict()
        assert mine.keys() == net.state_dict().keys()
        for key, value in net.state_dict().items():
            torch.testing.assert_close(mine[key], value, rtol=0, atol=0)


def test_a_dfgan_pickle_is_refused_without_opting_in(tmp_path):
    path = tmp_path / "netG.pth"
    _dfgan_file(path)
    with pytest.raises(CheckpointError, match="pickle"):
        load_gan(path)


def test_an_unexpected_key_is_listed(tmp_path):
    path = tmp_path / "odd.pth"
    _dfgan_file(path, extra={"GBlocks.9.c1.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError) as info:
        load_gan(path, allow_pickle=True)
    assert "GBlocks.9.c1.weight" in info.value.unexpected


def test_config_is_read_off_the_generator(tiny_config):
    assert infer_config(NetG(tiny_config).state_dict()) == tiny_config


def test_our_folder_round_trips(tmp_path, tiny_config):
    torch.manual_seed(0)
    model = GanTrainable(tiny_config)
    model.save(tmp_path / "model")
    loaded = load_gan(tmp_path / "model")
    assert loaded.config == tiny_config and loaded.netD is not None
    for key, value in model.netG.state_dict().items():
        torch.testing.assert_close(loaded.netG.state_dict()[key], value.half().float())


def test_another_familys_checkpoints_are_refused_before_model_work(tmp_path):
    folder = tmp_path / "ldm"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"unet": {}, "vae": {}, "text": {}}))
    with pytest.raises(CheckpointError, match="family 'ldm', not a GAN"):
        load_gan(folder)
    sd = tmp_path / "sd.safetensors"
    save_safetensors({"model.diffusion_model.out.0.weight": torch.zeros(2)}, sd)
    with pytest.raises(CheckpointError, match="Stable Diffusion"):
        load_gan(sd)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="not DF-GAN's layout"):
        load_gan(other, allow_pickle=True)


def test_our_folder_with_norm_and_projection_round_trips(tmp_path):
    """The fitted SentenceNorm buffers and the projection travel in netG / netC."""
    from t2i_gan.trainable import GanTrainable

    config = GanConfig(nf=2, z_dim=8, cond_dim=6, image_size=32, cond_norm=True, projection=True)
    torch.manual_seed(1)
    model = GanTrainable(config)
    model.fit_condition(torch.randn(40, 6) * 2 + 3)
    model.save(tmp_path / "m")
    loaded = load_gan(tmp_path / "m")
    z, s = torch.randn(2, 8), torch.randn(2, 6) * 2 + 3
    torch.testing.assert_close(
        loaded.netG(z, s), model.netG.half().float()(z, s), atol=2e-3, rtol=0
    )
    torch.testing.assert_close(
        loaded.netC.cond_norm.mean, model.netC.cond_norm.mean, atol=1e-2, rtol=1e-3
    )
    assert loaded.netC.proj is not None
