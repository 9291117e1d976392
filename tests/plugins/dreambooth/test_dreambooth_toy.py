"""DreamBooth on the toy diffusion family of ``t2i.testing``: a third party's family gets it
through the contracts alone (full fine-tune and LoRA, prior preservation, resume)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from t2i_dreambooth import DreamBoothOptions, dreambooth
from t2i_dreambooth.model import min_snr_weights

from t2i import Engine
from t2i.payloads import Conditioning


def _options(instance_dir, out, **kw):
    base = dict(
        recipe="toy-diffusion",
        instance_dir=instance_dir,
        instance_prompt="a sks dot",
        class_prompt="a dot",
        prior_preservation=True,
        num_class_images=3,
        output_dir=out,
        steps=4,
        batch_size=2,
        checkpointing_steps=2,
        learning_rate=1e-2,
    )
    return DreamBoothOptions(**{**base, **kw})


def _denoised(pipe, seed=3):
    """The pipeline's denoiser and text encoder on one fixed input (what training changes)."""
    outs = pipe.executor.run(pipe.graph, outputs=["denoiser", "text_encoder", "tokenizer"])
    model = outs["denoiser"]["model"]
    cond = outs["text_encoder"]["text_encoder"](outs["tokenizer"]["tokenizer"](["a sks dot"]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, 8, 8, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([2.0]), Conditioning(cond.embeds, cond.pooled))


@pytest.mark.parametrize("lora", [False, True])
def test_third_party_family_fine_tunes(toy_manager, instance_dir, tmp_path, lora):
    out = tmp_path / "run"
    options = _options(
        instance_dir,
        out,
        lora=lora,
        train_text_encoder=not lora,
        validation_prompts=("a sks dot", "a dot"),
        validation_steps=2,
        num_validation_images=3,
        offset_noise=0.1,
        snr_gamma=5.0,
    )
    folder = dreambooth(options)
    before = _denoised(Engine.build("toy-diffusion"))
    if lora:
        assert (folder / "lora.safetensors").is_file()
        built = Engine.build("toy-diffusion", lora=str(folder / "lora.safetensors"))
        half = Engine.build("toy-diffusion", lora=str(folder / "lora.safetensors"), lora_scale=0.5)
        after, mid = _denoised(built), _denoised(half)
        assert torch.allclose(mid, (before + after) / 2, atol=1e-2)  # the LoRA is linear in w
    else:
        assert {p.name for p in folder.glob("*.safetensors")} == {
            "denoiser.safetensors",
            "text_encoder.safetensors",
        }
        after = _denoised(Engine.build("toy-diffusion", weights=str(folder)))
    assert (after - before).abs().max() > 1e-3  # training moved the model
    again = _denoised(Engine.build("dreambooth", checkpoint=str(folder)))
    assert torch.equal(again, after)
    grids = sorted((out / "validation").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-000002.png", "step-000004.png"]
    assert Image.open(grids[-1]).size == (3 * 8, 2 * 8)  # 3 seeds x 2 prompts
    record = json.loads((folder / "dreambooth.json").read_text())
    assert record["recipe"] == "toy-diffusion" and record["lora"] is lora


def test_class_images_are_cached_and_reused(toy_manager, instance_dir, tmp_path, caplog):
    classes = tmp_path / "classes"
    dreambooth(_options(instance_dir, tmp_path / "a", steps=1, class_dir=str(classes)))
    first = {p.name: p.stat().st_mtime_ns for p in classes.glob("*.png")}
    assert len(first) == 3
    dreambooth(_options(instance_dir, tmp_path / "b", steps=1, class_dir=str(classes)))
    assert {p.name: p.stat().st_mtime_ns for p in classes.glob("*.png")} == first
    dreambooth(
        _options(instance_dir, tmp_path / "c", steps=1, class_dir=str(classes), num_class_images=5)
    )
    now = {p.name: p.stat().st_mtime_ns for p in classes.glob("*.png")}
    assert len(now) == 5 and all(now[k] == v for k, v in first.items())  # 2 added, 3 kept


def test_resume_continues_as_one_run(toy_manager, instance_dir, tmp_path):
    whole = dreambooth(_options(instance_dir, tmp_path / "whole", steps=4, lora=True))
    part = tmp_path / "part"
    dreambooth(_options(instance_dir, part, steps=2, lora=True))
    resumed = dreambooth(
        _options(instance_dir, part, steps=4, lora=True, resume_from_checkpoint="latest")
    )
    from safetensors.torch import load_file

    a, b = load_file(whole / "lora.safetensors"), load_file(resumed / "lora.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_min_snr_weights_match_the_formula():
    sigma = torch.rand(16, dtype=torch.float64) * 10 + 0.01
    snr = 1 / sigma**2
    eps = min_snr_weights(sigma, 5.0, "epsilon").double()
    v = min_snr_weights(sigma, 5.0, "v_prediction").double()
    assert torch.allclose(eps, torch.minimum(snr, torch.tensor(5.0)) / snr, rtol=1e-6)
    assert torch.allclose(v, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1), rtol=1e-6)
