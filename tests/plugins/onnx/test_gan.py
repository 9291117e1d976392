"""The GAN family (t2i_gan) through the exporter: a random-weight 64 px generator folder (the
layout of tests/plugins/gan/conftest.py). Its components describe no modules yet
(``export_spec``), so the export is refused with an error that names the fix; once they do,
the same recipe must export and match torch within 2/255."""

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
    from t2i_gan.generator import GanGenerator
    from t2i_onnx.exporter import export_recipe
    from t2i_onnx.manifest import OnnxExportError

    options = {"checkpoint": str(gan_folder)}
    out = tmp_path / "gan"
    if not hasattr(GanGenerator, "export_spec"):
        with pytest.raises(OnnxExportError, match=r"no component with an export_spec\(\)"):
            export_recipe("gan-shapes", out, options=options, plugins=gan_manager)
        assert not out.exists() and list(tmp_path.iterdir()) == []
        return
    export_recipe("gan-shapes", out, options=options, plugins=gan_manager)
    from onnx_checks import pixel_distance

    expected = Engine.build("gan-shapes", plugins=gan_manager, **options)("a red circle", seed=2)
    pipe = Engine.build(runtime="onnx", plugins=gan_manager, onnx_dir=out)
    assert pixel_distance(pipe("a red circle", seed=2).images, expected.images) <= 2
