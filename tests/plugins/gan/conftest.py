"""Fixtures of the GAN plugin's tests: tiny DF-GAN configs, a random-weight model folder."""

import pytest

pytest.importorskip("t2i_gan", reason="the GAN plugin is not installed (-e plugins/t2i_gan)")

from t2i_gan.models import GanConfig

TINY = GanConfig(nf=2, z_dim=8, cond_dim=6, image_size=32)


@pytest.fixture
def tiny_config() -> GanConfig:
    return TINY


@pytest.fixture(scope="session")
def gan_folder(tmp_path_factory):
    """A ``t2i train gan``-layout folder of a random 64 px generator on MiniLM's width."""
    import json

    import attrs
    import torch
    from t2i_gan.models import NetG

    from t2i.checkpoints import save_safetensors

    config = GanConfig(nf=4, z_dim=100, cond_dim=384, image_size=64)
    torch.manual_seed(0)
    net = NetG(config)
    folder = tmp_path_factory.mktemp("gan") / "model"
    save_safetensors(net.state_dict(), folder / "netG.safetensors")
    spec = {"family": "gan", "config": attrs.asdict(config), "training": {}}
    (folder / "model.json").write_text(json.dumps(spec))
    return folder
