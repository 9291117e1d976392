"""The imagen-shapes cascade on a folder of tiny random stages: generation controls, per-stage
settings, and the request errors of a cascade (size, noise level), before any model work."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch

from t2i import Engine
from t2i.request import RequestError
from t2i.testing import make_manager

pytest.importorskip("t2i_imagen")

from t2i_imagen import plugin
from t2i_imagen.efficient_unet import EfficientUNet
from t2i_imagen.presets import TINY_BASE, TINY_SR
from t2i_imagen.trainables import save_stage, stage_file


def _minilm_or_skip():
    from t2i.text.minilm import MiniLmNotFoundError, find_minilm

    try:
        find_minilm()
    except MiniLmNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    _minilm_or_skip()
    folder = tmp_path_factory.mktemp("imagen-shapes")
    torch.manual_seed(0)
    for stage, cfg, size in (("base", TINY_BASE, 16), ("sr", TINY_SR, 32)):
        unet = EfficientUNet(attrs.evolve(cfg, text_dim=384, pooled_dim=384))
        for p in unet.parameters():  # random, not zero-initialised: outputs depend on inputs
            torch.nn.init.normal_(p, std=0.05)
        save_stage(unet, stage_file(folder, stage), stage=stage, prediction_type="v_prediction",
                   size=size, extra={"test": True})  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def pipe(shapes_folder):
    return Engine.build(
        "imagen-shapes", plugins=make_manager(plugin), checkpoint=str(shapes_folder)
    )


FAST = dict(steps=2, sr_steps=2)


def _pixels(result):
    return np.stack([np.asarray(im) for im in result.images]).astype(np.int16)


@pytest.mark.slow
def test_generates_the_cascade_size_reproducibly(pipe):
    a = pipe("a red circle", seed=5, batch_size=2, **FAST)
    b = pipe("a red circle", seed=5, batch_size=2, **FAST)
    assert [im.size for im in a.images] == [(32, 32)] * 2
    assert np.array_equal(_pixels(a), _pixels(b))
    assert not np.array_equal(_pixels(a)[0], _pixels(a)[1])  # seed + i per row
    assert "Model: imagen-shapes" in a.infotexts[0] and "Seed: 5" in a.infotexts[0]
    assert a.metadata["parameters"]["extra"]["noise_level"] == 100
    c = pipe("a red circle", seed=5, **{**FAST, "sr_cfg_scale": 3.5, "noise_level": 250})
    for part in ("SR CFG scale: 3.5", "Noise level: 250", "SR steps: ", "SR sampler: "):
        assert part in c.infotexts[0], c.infotexts[0]  # the SR stage's settings recorded


@pytest.mark.slow
def test_each_stage_has_its_own_settings(pipe):
    base = _pixels(pipe("a blue square", seed=1, **FAST))
    for change in ({"sr_cfg_scale": 7.5}, {"noise_level": 600}, {"sr_sampler": "euler"},
                   {"cfg_scale": 1.0}, {"negative_prompt": "a green triangle"}):  # fmt: skip
        other = _pixels(pipe("a blue square", seed=1, **{**FAST, **change}))
        assert not np.array_equal(base, other), change


@pytest.mark.slow
def test_img2img_runs_on_the_base_stage(pipe):
    from PIL import Image

    init = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    out = pipe("a red circle", seed=2, init_image=init, strength=0.5, **FAST)
    assert out.images[0].size == (32, 32)


def _count_unet_calls(monkeypatch):
    calls = []
    forward = EfficientUNet.forward
    monkeypatch.setattr(
        EfficientUNet, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k)
    )
    return calls


def test_size_other_than_base_times_factor_is_refused(pipe, monkeypatch):
    calls = _count_unet_calls(monkeypatch)
    from t2i.graph.errors import NodeExecutionError

    with pytest.raises(
        NodeExecutionError, match=r"48x48 is not the cascade's 32x32 .*width=32 height=32"
    ):
        pipe("a red circle", width=48, height=48, **FAST)
    assert calls == []


@pytest.mark.parametrize("level", [1000, -1, 2.5])
def test_noise_level_out_of_range_is_refused(pipe, monkeypatch, level):
    calls = _count_unet_calls(monkeypatch)
    with pytest.raises(RequestError, match="noise_level"):
        pipe("a red circle", noise_level=level, **FAST)
    assert calls == []


def test_stage_file_given_for_the_other_stage(shapes_folder, tmp_path):
    import shutil

    from t2i.checkpoints import CheckpointError

    shutil.copy(stage_file(shapes_folder, "sr"), tmp_path / "base.safetensors")
    with pytest.raises(CheckpointError, match="'sr' stage, given as the 'base' stage"):
        Engine.build("imagen-shapes", plugins=make_manager(plugin), checkpoint=str(tmp_path),
                     sr_checkpoint=str(shapes_folder))  # fmt: skip


def test_sr_stage_defaults_are_recipe_options(shapes_folder):
    from t2i.engine import EngineError

    manager = make_manager(plugin)
    pipe = Engine.build("imagen-shapes", plugins=manager, checkpoint=str(shapes_folder),
                        noise_level=0, sr_steps=3, sr_cfg_scale=1.5)  # fmt: skip
    assert (pipe.defaults["noise_level"], pipe.defaults["sr_steps"]) == (0, 3)
    assert pipe.defaults["sr_cfg_scale"] == 1.5
    for bad in ({"noise_level": 1000}, {"noise_level": 2.5}, {"sr_steps": 0}):
        with pytest.raises(EngineError, match=next(iter(bad))):
            Engine.build("imagen-shapes", plugins=manager, checkpoint=str(shapes_folder), **bad)
