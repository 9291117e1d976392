"""DeepFloyd IF folders (diffusers' ``save_pretrained`` on tiny random IF configs) against
diffusers' IF pipelines: the UNets (fp32, 1e-4 relative) and the two-stage image (2/255 per
pixel) with the same scheduler (DDPM with ``fixed_small`` variance, ``leading`` spacing),
dynamic thresholding (the folders' 0.95 / 1.5 / 1.0) and seed-compatible noise.

The noise: each stage's rows are drawn as the engine draws them (a CPU generator per row
seeded ``seed + i``: the starting noise, then one draw per DDPM step; stage II's augmentation
noise is the second draw of its own generator of that seed, as ``IFSuperResolutionPipeline``
draws it) and handed to diffusers in the order it asks for them. The starting noise is
given in diffusers' variable: the engine starts at ``x = noise * sigma`` (Karras form),
which is the variance-preserving ``noise * sigma / sqrt(1 + sigma^2)`` diffusers steps from.
(Spacings that start at t = 999 are left out: there IF's sigma is 2e4, and float32
round-off of a random UNet's eps, times 2e4, flips thresholded pixels either way.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i import Engine
from t2i.noise import BatchNoise
from t2i.testing import make_manager

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("t2i_imagen")

from if_fixtures import TINY_STAGE_I, TINY_STAGE_II, write_if_folders  # noqa: E402
from t2i_imagen import plugin  # noqa: E402
from t2i_imagen.if_unet import IFUNet, IFUNetConfig  # noqa: E402
from t2i_imagen.noise_aug import augmentation_noise  # noqa: E402


@pytest.fixture(scope="module")
def if_folders(tmp_path_factory):
    (stage1_dir, stage2_dir), stage1, stage2 = write_if_folders(tmp_path_factory.mktemp("if"))
    for pipe in (stage1, stage2):
        pipe.scheduler = diffusers.DDPMScheduler.from_config(
            pipe.scheduler.config,
            timestep_spacing="leading",
            steps_offset=1,
            variance_type="fixed_small",
        )
        pipe.set_progress_bar_config(disable=True)
    return stage1_dir, stage2_dir, stage1, stage2


@pytest.mark.parametrize("config", [TINY_STAGE_I, TINY_STAGE_II], ids=["stage_I", "stage_II"])
def test_unet_matches_diffusers(config):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,))))
    ref = diffusers.UNet2DConditionModel(**config).eval()
    ours = IFUNet(IFUNetConfig.from_diffusers(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    size, batch = config["sample_size"], 3
    x = torch.randn(batch, config["in_channels"], size, size)
    t = torch.randint(0, 1000, (batch,)).float()
    text = torch.randn(batch, 11, config["encoder_hid_dim"])
    labels = torch.randint(0, 1000, (batch,)).float() if "class_embed_type" in config else None
    with torch.no_grad():
        expected = ref(x, t, encoder_hidden_states=text, class_labels=labels).sample
        got = ours(x, t, text, labels)
    assert got.shape == expected.shape == (batch, 6, size, size)
    rel = float((got - expected).abs().max() / expected.abs().max())
    assert rel < 1e-4, rel


def test_config_outside_if_is_refused():
    with pytest.raises(ValueError, match="down_block_types"):
        IFUNetConfig.from_diffusers(
            {**TINY_STAGE_I, "down_block_types": ["CrossAttnDownBlock2D"] * 2}
        )
    with pytest.raises(ValueError, match="use_linear_projection"):
        IFUNetConfig.from_diffusers({**TINY_STAGE_I, "use_linear_projection": True})


def _engine_noise(shape, seeds, steps, sigma0, *, augmentation=False):
    """The engine's draws for one stage of ``steps`` DDPM steps, in diffusers' order."""
    stream = BatchNoise(shape, seeds)
    start = stream.next() * (sigma0 / (1 + sigma0**2) ** 0.5)
    draws = [start, *([augmentation_noise(shape, tuple(seeds))] if augmentation else [])]
    return draws + [stream.next() for _ in range(steps)]  # the last one is scaled by ~0


def _patch_noise(monkeypatch, draws):
    def randn_tensor(shape, generator=None, device=None, dtype=None, **_):
        out = draws.pop(0)
        assert tuple(out.shape) == tuple(shape)
        return out.to(device=device, dtype=dtype)

    for module in ("pipelines.deepfloyd_if.pipeline_if", "schedulers.scheduling_ddpm",
                   "pipelines.deepfloyd_if.pipeline_if_superresolution"):  # fmt: skip
        monkeypatch.setattr(f"diffusers.{module}.randn_tensor", randn_tensor)


def _first_sigma(pipe, steps):
    pipe.scheduler.set_timesteps(steps)
    a = float(pipe.scheduler.alphas_cumprod[int(pipe.scheduler.timesteps[0])])
    return ((1 - a) / a) ** 0.5


def _diffusers_image(if_folders, prompt, seeds, steps, monkeypatch):
    _, _, stage1, stage2 = if_folders
    n = len(seeds)
    with torch.no_grad():
        pe, ne = stage1.encode_prompt(
            prompt, do_classifier_free_guidance=True, num_images_per_prompt=n
        )
        size = stage1.unet.config.sample_size
        draws = _engine_noise((n, 3, size, size), seeds, steps, _first_sigma(stage1, steps))
        _patch_noise(monkeypatch, draws)
        low = stage1(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=steps,
                     guidance_scale=7.0, output_type="pt").images  # fmt: skip
        size = stage2.unet.config.sample_size
        sigma0 = _first_sigma(stage2, steps)
        draws += _engine_noise((n, 3, size, size), seeds, steps, sigma0, augmentation=True)
        high = stage2(image=low, prompt_embeds=pe, negative_prompt_embeds=ne,
                      num_inference_steps=steps, guidance_scale=4.0, noise_level=250,
                      output_type="pt").images  # fmt: skip
    assert not draws
    return np.round(((high / 2 + 0.5).clamp(0, 1) * 255).permute(0, 2, 3, 1).numpy()).astype(
        np.int16
    )


@pytest.mark.slow
def test_two_stage_image_matches_diffusers(if_folders, monkeypatch):
    stage1_dir, stage2_dir, _, _ = if_folders
    seed = int(torch.randint(0, 2**31, (1,)))
    seeds, steps, prompt = [seed, seed + 1], 4, "A red circle left of the blue square"
    expected = _diffusers_image(if_folders, prompt, seeds, steps, monkeypatch)
    pipe = Engine.build(
        "imagen", plugins=make_manager(plugin), checkpoint=str(stage1_dir),
        sr_checkpoint=str(stage2_dir), guidance="dynamic",
    )  # fmt: skip
    result = pipe(prompt, seed=seed, batch_size=2, steps=steps, sampler="ddpm",
                  schedule="leading", cfg_scale=7.0, sr_steps=steps, sr_sampler="ddpm",
                  sr_schedule="leading", sr_cfg_scale=4.0, noise_level=250)  # fmt: skip
    got = np.stack([np.asarray(im) for im in result.images]).astype(np.int16)
    assert got.shape == expected.shape == (2, 32, 32, 3)
    diff = int(np.abs(got - expected).max())
    assert diff <= 2, f"max pixel difference {diff}/255"
    assert expected.std() > 5  # not a flat image: the comparison means something


@pytest.mark.slow
def test_t5_states_match_encode_prompt(if_folders):
    from t2i_imagen.t5 import T5TextEncoder, T5Tokenizer

    stage1_dir, _, stage1, _ = if_folders
    prompts = ["  A Red CIRCLE left of the blue square ", ""]
    tokens = T5Tokenizer(stage1_dir / "tokenizer")(prompts)
    cond = T5TextEncoder.from_folder(stage1_dir / "text_encoder")(tokens)
    with torch.no_grad():
        expected, _ = stage1.encode_prompt(prompts, do_classifier_free_guidance=False)
    assert cond.embeds.shape == expected.shape == (2, 77, 48)
    torch.testing.assert_close(cond.embeds, expected)
    assert cond.mask.sum(1).tolist() == [9, 1]  # 8 words + </s>; "" is </s> alone


@pytest.mark.slow
def test_fp16_variant_folders_load(tmp_path):
    from t2i_imagen.if_folder import load_unet, read_stage

    (stage1_dir, stage2_dir), _, _ = write_if_folders(tmp_path, fp16=True, seed=3)
    assert (stage1_dir / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    for folder, config in ((stage1_dir, TINY_STAGE_I), (stage2_dir, TINY_STAGE_II)):
        ref = diffusers.UNet2DConditionModel.from_pretrained(
            folder / "unet", variant="fp16", torch_dtype=torch.float32
        ).eval()
        ours = load_unet(read_stage(folder), dtype=torch.float32)  # finds the fp16 files
        assert next(ours.parameters()).dtype == torch.float32
        size = config["sample_size"]
        x = torch.randn(2, config["in_channels"], size, size)
        t, text = torch.tensor([3.0, 800.0]), torch.randn(2, 9, config["encoder_hid_dim"])
        labels = torch.tensor([250.0, 0.0]) if "class_embed_type" in config else None
        with torch.no_grad():
            expected = ref(x, t, encoder_hidden_states=text, class_labels=labels).sample
            got = ours(x, t, text, labels)
        assert float((got - expected).abs().max() / expected.abs().max()) < 1e-4
    pipe = Engine.build("imagen", plugins=make_manager(plugin), checkpoint=str(stage1_dir),
                        sr_checkpoint=str(stage2_dir), variant="fp16", dtype="float32")  # fmt: skip
    out = pipe("a cat", seed=1, steps=2, sr_steps=2, sampler="ddim", sr_sampler="ddim")
    assert out.images[0].size == (32, 32)
