"""Bad IF cascades are refused at Engine.build, from the folders' JSON files alone (no
weights are read: these folders have none), each with an error naming the fix."""

from __future__ import annotations

import json

import pytest

from t2i import Engine
from t2i.engine import EngineError
from t2i.testing import make_manager

pytest.importorskip("t2i_imagen")

from if_fixtures import TINY_STAGE_I, TINY_STAGE_II
from t2i_imagen import plugin

SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "beta_schedule": "squaredcos_cap_v2",
    "thresholding": True,
    "dynamic_thresholding_ratio": 0.95,
    "sample_max_value": 1.5,
}


def _folder(root, name, pipeline, unet, *, scheduler=None, t5_width=None):
    folder = root / name
    (folder / "unet").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    (folder / "unet" / "config.json").write_text(json.dumps(unet))
    sched = {**SCHEDULER, **(scheduler or {})}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    if t5_width is not None:
        (folder / "text_encoder").mkdir()
        (folder / "text_encoder" / "config.json").write_text(json.dumps({"d_model": t5_width}))
    return folder


def _build(stage1, stage2, **options):
    return Engine.build("imagen", plugins=make_manager(plugin), checkpoint=str(stage1),
                        sr_checkpoint=str(stage2), **options)  # fmt: skip


@pytest.fixture
def folders(tmp_path):
    one = _folder(tmp_path, "I", "IFPipeline", TINY_STAGE_I, t5_width=48)
    two = _folder(tmp_path, "II", "IFSuperResolutionPipeline", TINY_STAGE_II)
    return tmp_path, one, two


def test_stage_two_given_as_stage_one(folders):
    _, one, two = folders
    with pytest.raises(EngineError, match=r"stage II .*pass it as sr_checkpoint="):
        _build(two, two)
    with pytest.raises(EngineError, match=r"sr_checkpoint .* stage I folder"):
        _build(one, one)


def test_mismatched_text_widths(folders):
    root, one, _ = folders
    wide = _folder(
        root, "II-wide", "IFSuperResolutionPipeline", {**TINY_STAGE_II, "encoder_hid_dim": 64}
    )
    with pytest.raises(EngineError, match=r"different widths .*stage I UNet 48.*stage II UNet 64"):
        _build(one, wide)
    other_t5 = _folder(root, "I-t5", "IFPipeline", TINY_STAGE_I, t5_width=32)
    with pytest.raises(EngineError, match=r"T5 encoder 32"):
        _build(other_t5, folders[2])


def test_dynamic_guidance_needs_samples_in_unit_range(folders):
    root, one, _ = folders
    wide_range = _folder(root, "II-range", "IFSuperResolutionPipeline", TINY_STAGE_II,
                         scheduler={"clip_sample_range": 2.0})  # fmt: skip
    with pytest.raises(EngineError, match=r"guidance='dynamic' .*\(-2.0, 2.0\).*guidance='cfg'"):
        _build(one, wide_range, guidance="dynamic")


def test_not_an_if_folder(folders):
    root, one, _ = folders
    sd = _folder(root, "sd", "StableDiffusionPipeline", TINY_STAGE_I)
    with pytest.raises(Exception, match="not an IF pipeline"):
        _build(one, sd)
    with pytest.raises(EngineError, match="sr_checkpoint= is required"):
        Engine.build("imagen", plugins=make_manager(plugin), checkpoint=str(one))
    odd = _folder(root, "odd", "IFPipeline", {**TINY_STAGE_I, "use_linear_projection": True})
    with pytest.raises(Exception, match="use_linear_projection"):
        _build(odd, folders[2])
