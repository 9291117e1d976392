"""DreamBooth on the LDM family through the contracts: the embedded ``ldm-shapes`` model, and
an SD checkpoint of the ``ldm`` recipe whose LoRA output diffusers loads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from t2i import Engine
from t2i.testing import make_manager

pytest.importorskip("t2i_ldm")


@pytest.fixture
def ldm_manager():
    from t2i_dreambooth import plugin as dreambooth_plugin

    from t2i.plugins import set_plugin_manager
    from t2i_ldm import plugin

    manager = make_manager(plugin, dreambooth_plugin)
    previous = set_plugin_manager(manager)
    yield manager
    set_plugin_manager(previous)


def _ldm_test_module(name: str):
    """A module of tests/plugins/ldm (``conftest``: the tiny random SD builder;
    ``test_ldm_lora``: diffusers' side of the LoRA comparison), loaded under its own name."""
    path = Path(__file__).parents[1] / "ldm" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"ldm_tests_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_ldm_shapes_lora_is_usable_at_once(ldm_manager, tmp_path, images):
    from t2i_dreambooth import DreamBoothOptions, dreambooth

    folder = images(tmp_path / "star", [(64, 64)] * 2)
    model = dreambooth(
        DreamBoothOptions(
            recipe="ldm-shapes",
            instance_dir=folder,
            instance_prompt="a sks star",
            output_dir=tmp_path / "run",
            resolution=32,
            lora=True,
            steps=2,
            batch_size=1,
        )
    )
    base = Engine.build("ldm-shapes")("a sks star", seed=1, steps=4, width=32, height=32)
    tuned = Engine.build("ldm-shapes", lora=str(model / "lora.safetensors"), lora_scale=0.8)
    image = tuned("a sks star", seed=1, steps=4, width=32, height=32)
    diff = np.abs(np.asarray(image.images[0], np.int16) - np.asarray(base.images[0], np.int16))
    assert diff.max() > 0


@pytest.mark.slow
def test_sd_lora_output_loads_in_diffusers(ldm_manager, tmp_path, images):
    """LoRA on the UNet and the text encoder of an SD checkpoint (tiny, random), written in
    the diffusers layout: diffusers' load_lora_weights computes what t2i computes."""
    pytest.importorskip("diffusers")
    from t2i_dreambooth import DreamBoothOptions, dreambooth

    _, sd = _ldm_test_module("conftest").save_tiny_sd(tmp_path / "sd", vae_std=0.1)
    helpers = _ldm_test_module("test_ldm_lora")
    model = dreambooth(
        DreamBoothOptions(
            recipe="ldm",
            recipe_options={"checkpoint": str(sd)},
            instance_dir=images(tmp_path / "subject", [(40, 32)] * 2),
            instance_prompt="a photo of sks cat",
            class_prompt="a photo of cat",
            prior_preservation=True,
            num_class_images=2,
            output_dir=tmp_path / "run",
            resolution=32,
            lora=True,
            train_text_encoder=True,
            learning_rate=5e-2,  # a few steps that move the adapters away from B = 0
            steps=3,
            batch_size=1,
        )
    )
    lora = model / "lora.safetensors"
    from safetensors.torch import load_file

    keys = load_file(lora).keys()
    assert any(k.startswith("unet.down_blocks.0.attentions.0.") for k in keys)
    assert any(k.startswith("text_encoder.text_model.encoder.layers.0.") for k in keys)
    torch.manual_seed(0)
    helpers.assert_same_modules(sd, [(lora, 1.0)], 7, lora=str(lora))
