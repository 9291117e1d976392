"""The GAN family (t2i_gan) through the exporter: a random-weight 64 px generator folder (the
layout of tests/plugins/gan/conftest.py): the generator (``generator``: noise, sentence ->
image) and the MiniLM sentence encoder export, match torch (1e-4 / 1e-3) and the ONNX runtime
rebuilds both as deployments (nothing built in torch) whose images are within 2/255."""

import json

import pytest

from t2i.engine import Engine

pytest.importorskip("t2i_gan", reason="the GAN plugin is not installed (-e plugins/t2i_gan)")


@pytest.fixture(scope="module")
def gan_manager():
    from t2i_gan import plugin as gan_plugin

    from t2i.testing import make_manager

    return make_manager(gan_plugin)


@pytest.fixture(scope="module")
def gan_folder(tmp_path_factory):
    """A ``t2i train gan``-layout folder of a random 64 px generator on MiniLM's width."""
    import attrs
    import torch
    from t2i_gan.models import GanConfig, NetG

    from t2i.checkpoints import save_safetensors

    config = GanConfig(nf=4, z_dim=100, cond_dim=384, image_size=64)
    torch.manual_seed(0)
    net = NetG(config)
    folder = tmp_path_factory.mktemp("gan") / "model"
    save_safetensors(net.state_dict(), folder / "netG.safetensors")
    spec = {"family": "gan", "config": attrs.asdict(config), "training": {}}
    (folder / "model.json").write_text(json.dumps(spec))
    return folder


@pytest.mark.slow
def test_gan_generator_export(gan_folder, gan_manager, tmp_path):
    from t2i_onnx.exporter import export_recipe

    options = {"checkpoint": str(gan_folder)}
    out = tmp_path / "gan"
    manifest = export_recipe("gan-shapes", out, options=options, plugins=gan_manager)
    assert {"generator", "text_encoder"} <= set(manifest["models"])
    from onnx_checks import custom_domains, example_parity, pixel_distance

    torch_pipe = Engine.build("gan-shapes", plugins=gan_manager, **options)
    example_parity(torch_pipe, out, {"generator": 1e-4}, 1e-3)
    assert custom_domains(out) == set()
    fields = {"seed": 2, "batch_size": 3}
    expected = torch_pipe("a red circle", **fields)
    pipe = Engine.build(runtime="onnx", plugins=gan_manager, onnx_dir=out)
    assert pipe.onnx_torch_built == [] and set(pipe.onnx_deployed) == set(manifest["components"])
    assert pixel_distance(pipe("a red circle", **fields).images, expected.images) <= 2
