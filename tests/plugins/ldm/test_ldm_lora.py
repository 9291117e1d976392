"""LoRA files users hold, in the ``ldm`` recipe, against diffusers' ``load_lora_weights``.

A tiny random SD pipeline (diffusers' ``save_pretrained``) and tiny random LoRAs in the
diffusers/peft layout and the kohya/A1111 layout (``lora_unet_*`` / ``lora_te_*`` with
``alpha``) give, through ``Engine.build("ldm", lora=...)``, diffusers' image within 2/255
(fp32, CPU), one LoRA or two at once with their scales; a LoRA made for another
architecture or with mismatched ranks is refused naming its keys.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from t2i import Engine
from t2i.checkpoints import CheckpointError
from t2i.testing import make_manager
from t2i_ldm import plugin

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
"""Attention projections, the transformer blocks' 1x1 convs (LoRA on convs) and MLPs."""


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory, make_tiny_sd):
    """A tiny random SD pipeline folder; its VAE at std 0.1, so the images differ visibly."""
    return make_tiny_sd(tmp_path_factory.mktemp("sd_lora"), vae_std=0.1)[1]


def _layers(pipe):
    """``(role, diffusers name, in, out)`` of every LoRA target of the tiny pipeline."""
    out = []
    for role, model, targets in (
        ("unet", pipe.unet, UNET_TARGETS),
        ("text_encoder", pipe.text_encoder, TEXT_TARGETS),
    ):
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and any(
                name.endswith("." + t) for t in targets
            ):
                out.append((role, name, m.weight.shape[1:], m.weight.shape[0]))
    return out


def random_lora(pipe, path, *, rank=4, layout="diffusers", alpha=None, std=0.5, seed=0):
    """A random LoRA over the pipeline's attention projections, in ``layout``."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for role, name, n_in, n_out in _layers(pipe):
        down = torch.randn(rank, *n_in, generator=g) * std  # conv: (r, in, 1, 1)
        up = torch.randn(n_out, rank, *([1] * (len(n_in) - 1)), generator=g) * std
        if layout == "diffusers":
            state[f"{role}.{name}.lora_A.weight"] = down
            state[f"{role}.{name}.lora_B.weight"] = up
        else:
            prefix = "lora_unet_" if role == "unet" else "lora_te_"
            stem = prefix + name.replace(".", "_")
            state[f"{stem}.lora_down.weight"] = down
            state[f"{stem}.lora_up.weight"] = up
            state[f"{stem}.alpha"] = torch.tensor(float(alpha if alpha is not None else rank))
    save_file(state, str(path))
    return path


def _diffusers(folder, loras):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    names = []
    for i, (path, _scale) in enumerate(loras):
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=f"l{i}")
        names.append(f"l{i}")
    if names:
        pipe.set_adapters(names, adapter_weights=[s for _, s in loras])
    return pipe


def _diffusers_image(folder, loras, prompt, seed, steps=5, size=32):
    pipe = _diffusers(folder, loras)
    out = pipe(
        prompt,
        negative_prompt="",
        num_inference_steps=steps,
        guidance_scale=5.0,
        height=size,
        width=size,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return np.round(out.images[0] * 255).astype(np.int16)


def _modules(folder, **build):
    """Our (denoiser, text encoder) of the ldm recipe built with ``build``."""
    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder), **build)
    outs = pipe.executor.run(pipe.graph, outputs=["denoiser", "text_encoder"])
    return outs["denoiser"]["model"], outs["text_encoder"]["text_encoder"]


def _module_outputs(unet, text, seed):
    """UNet eps and text states of one random input (a diffusers model or ours)."""
    g = torch.Generator().manual_seed(seed)
    x, ids = torch.randn(2, 4, 8, 8, generator=g), torch.randint(0, 60, (2, 77), generator=g)
    t, context = torch.tensor([10.0, 700.0]), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        if isinstance(unet, torch.nn.Module) and hasattr(unet, "add_adapter"):  # diffusers
            return unet(x, t, encoder_hidden_states=context).sample, text(ids)[0]
        return unet.unet(x, t, context), text.model(input_ids=ids).last_hidden_state


def assert_same_modules(folder, loras, seed, **build):
    """Our LoRA-merged UNet and text model compute diffusers' (peft-adapted) outputs, and
    the LoRA moves them by far more than the two differ."""
    ref = _diffusers(folder, loras)
    want = _module_outputs(ref.unet, ref.text_encoder, seed)
    got = _module_outputs(*_modules(folder, **build), seed)
    base = _module_outputs(*_modules(folder), seed)
    for w, g, b in zip(want, got, base, strict=True):
        err, moved = (w - g).abs().max().item(), (w - b).abs().max().item()
        assert err < 1e-4 * max(1.0, w.abs().max().item()), err
        assert moved > 1e-2, moved


def _ours(folder, prompt, seed, steps=5, size=32, **build):
    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder), **build)
    result = pipe(
        prompt,
        negative_prompt="",
        steps=steps,
        cfg_scale=5.0,
        seed=seed,
        width=size,
        height=size,
        sampler="euler",
        schedule="linspace",
    )
    return np.asarray(result.images[0]).astype(np.int16)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["diffusers", "kohya"])
def test_lora_as_diffusers_loads_it(sd_folder, tmp_path, layout):
    ref = diffusers.StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None)
    seed = int(torch.randint(0, 2**31, (1,)))
    alpha = 2.0 if layout == "kohya" else None  # kohya: the delta scales by alpha / rank
    path = random_lora(ref, tmp_path / "a.safetensors", layout=layout, alpha=alpha, seed=seed)
    prompt = "a red cube on top of a blue sphere"
    expected = _diffusers_image(sd_folder, [(path, 0.8)], prompt, seed)
    got = _ours(sd_folder, prompt, seed, lora=str(path), lora_scale=0.8)
    assert np.abs(got - expected).max() <= 2
    assert_same_modules(sd_folder, [(path, 0.8)], seed, lora=str(path), lora_scale=0.8)


@pytest.mark.slow
def test_two_loras_with_scales(sd_folder, tmp_path):
    ref = diffusers.StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None)
    a = random_lora(ref, tmp_path / "a.safetensors", seed=1)
    b = random_lora(ref, tmp_path / "b.safetensors", layout="kohya", alpha=4, seed=2, rank=2)
    prompt = "a small green sphere on the left"
    expected = _diffusers_image(sd_folder, [(a, 0.6), (b, -0.4)], prompt, 3)
    both = [(str(a), 0.6), (str(b), -0.4)]
    got = _ours(sd_folder, prompt, 3, lora=both)
    assert np.abs(got - expected).max() <= 2
    assert_same_modules(sd_folder, [(a, 0.6), (b, -0.4)], 3, lora=both)


@pytest.mark.slow
def test_prompt_tag_resolves_from_the_lora_folder(sd_folder, tmp_path):
    ref = diffusers.StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None)
    folder = tmp_path / "loras"
    folder.mkdir()
    random_lora(ref, folder / "style.safetensors", seed=5)
    tagged = _ours(sd_folder, "a red cube <lora:style:0.7>", 4, lora_dir=str(folder))
    built = _ours(
        sd_folder, "a red cube", 4, lora=str(folder / "style.safetensors"), lora_scale=0.7
    )
    assert np.abs(tagged - built).max() == 0
    from t2i.request import RequestError

    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(sd_folder))
    with pytest.raises(RequestError, match="no LoRA folder"):
        pipe.make_request("a cube <lora:style:0.7>")
    pipe = Engine.build(
        "ldm", plugins=make_manager(plugin), checkpoint=str(sd_folder), lora_dir=str(folder)
    )
    with pytest.raises(RequestError, match="LoRAs there: style"):
        pipe.make_request("a cube <lora:missing:1>")
    with pytest.raises(RequestError, match="must be a number"):
        pipe.make_request("a cube <lora:style:lots>")


def test_lora_for_another_architecture_lists_its_keys(sd_folder, tmp_path):
    state = {
        "lora_unet_mid_block_attentions_9_proj_in.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_mid_block_attentions_9_proj_in.lora_up.weight": torch.zeros(32, 4),
    }
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    pipe = Engine.build(
        "ldm", plugins=make_manager(plugin), checkpoint=str(sd_folder), lora=str(path)
    )
    with pytest.raises(Exception, match="another architecture") as info:
        pipe("a cube", steps=1, width=32, height=32)
    assert "mid_block_attentions_9_proj_in" in str(info.value)


def test_lora_rank_mismatch_is_refused(sd_folder, tmp_path):
    stem = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    state = {
        f"{stem}.lora_A.weight": torch.zeros(4, 32),
        f"{stem}.lora_B.weight": torch.zeros(32, 8),
    }
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="rank mismatch"):
        Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(sd_folder), lora=str(path))


def test_not_a_lora_file(sd_folder, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError, match="not a LoRA file"):
        Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(sd_folder), lora=str(path))
