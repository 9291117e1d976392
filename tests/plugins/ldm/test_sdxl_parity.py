"""SDXL against diffusers on random tiny weights (conftest's ``tiny_sdxl``).

The same weights, written by diffusers' ``save_pretrained`` and as an A1111-layout single file,
load into t2i's ``ldm`` recipe: the UNet (per-level transformer depth, no attention at the
first level, ``text_time`` micro-conditioning) within 1e-4 relative of ``UNet2DConditionModel``,
the two text towers' conditioning as ``StableDiffusionXLPipeline.encode_prompt``, and the final
image within 2/255 for the same prompt, seed and scheduler (fp32, CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i import Engine
from t2i.testing import make_manager
from t2i_ldm import plugin
from t2i_ldm.denoiser import MicroConditioning, UNetPredictor
from t2i_ldm.recipes import create_clip_text_encoder, create_clip_tokenizer, load_models
from t2i_ldm.unet import sdxl_vector

diffusers = pytest.importorskip("diffusers")

SOURCES = ["diffusers_folder", "single_file"]
PROMPT, NEGATIVE = "a red cube on top of a blue sphere", "a small dog"


def _source(tiny, source):
    _pipe, folder, single = tiny
    if source == "diffusers_folder":
        return folder, {}
    return single, {"tokenizer": folder / "tokenizer", "text_head_dim": 16}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("source", SOURCES)
def test_unet_matches_diffusers(tiny_sdxl, source):
    pipe, folder, single = tiny_sdxl
    models = load_models(folder if source == "diffusers_folder" else single)
    assert models.config.name == "sdxl" and models.config.unet.adm_in_channels == 80
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 64, generator=g)
    pooled = torch.randn(2, 32, generator=g)
    t = torch.tensor([981.0, 17.5])
    time_ids = torch.tensor([[32.0, 32, 0, 0, 32, 32], [64, 48, 8, 4, 32, 32]])
    with torch.no_grad():
        ref = pipe.unet(x, t, ctx, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids})
        ours = models.unet(x, t, ctx, sdxl_vector(pooled, time_ids, 8))
        other = models.unet(x, t, ctx, sdxl_vector(pooled, time_ids + 16, 8))
    assert _rel(ours, ref.sample) < 1e-4
    assert _rel(other, ref.sample) > 1e-3  # the micro-conditioning reaches the output


def test_micro_conditioning_defaults_to_the_image_size(tiny_sdxl):
    """A1111 / diffusers: original = target = the image's (h, w), crop (0, 0)."""
    _, folder, _ = tiny_sdxl
    models = load_models(folder)
    predictor = UNetPredictor(models.unet, MicroConditioning(factor=2))
    cond = type("C", (), {})()  # not a Conditioning: refused, it has no pooled text
    with pytest.raises(ValueError, match="pooled text"):
        predictor.vector(torch.zeros(1, 4, 8, 12), cond)
    assert MicroConditioning(factor=2).values((1, 4, 8, 12), 6) == [16, 24, 0, 0, 16, 24]
    refiner = MicroConditioning(factor=8, crop_top_left=(4, 2), aesthetic_score=7.0)
    assert refiner.values((1, 4, 8, 8), 5) == [64, 64, 4, 2, 7.0]
    assert refiner.values((1, 4, 8, 8), 5, negative=True) == [64, 64, 4, 2, 2.5]


@pytest.mark.parametrize("source", SOURCES)
def test_text_conditioning_matches_encode_prompt(tiny_sdxl, source):
    pipe, *_ = tiny_sdxl
    checkpoint, extra = _source(tiny_sdxl, source)
    tokenizer = create_clip_tokenizer(checkpoint=checkpoint, tokenizer=extra.get("tokenizer"))
    encoder = create_clip_text_encoder(
        checkpoint=checkpoint, head_dim=extra.get("text_head_dim", 64)
    )
    with torch.no_grad():
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
            PROMPT, device="cpu", negative_prompt=NEGATIVE
        )
    ours = encoder(tokenizer([PROMPT]))
    ours_neg = encoder(tokenizer([NEGATIVE]))
    assert ours.embeds.shape == (1, 77, 64) and ours.pooled.shape == (1, 32)
    assert _rel(ours.embeds, embeds) < 1e-5 and _rel(ours.pooled, pooled) < 1e-5
    assert _rel(ours_neg.embeds, neg) < 1e-5 and _rel(ours_neg.pooled, neg_pooled) < 1e-5
    empty = encoder(tokenizer([""]))  # A1111's empty negative / force_zeros_for_empty_prompt
    assert not empty.embeds.any() and not empty.pooled.any()
    assert empty.pad_chunk is not None and empty.pad_chunk.abs().sum() > 0


def test_long_prompts_and_emphasis_per_tower(tiny_sdxl):
    """Chunks of 77 encoded on their own (pooled from the first), emphasis per tower."""
    _, folder, _ = tiny_sdxl
    tokenizer = create_clip_tokenizer(checkpoint=folder)
    encoder = create_clip_text_encoder(checkpoint=folder)
    long = ", ".join(["a red cube on top of a blue sphere"] * 12)
    cond = encoder(tokenizer([long]))
    assert cond.embeds.shape == (1, 154, 64)
    first = encoder(tokenizer([long]).__class__(ids=tokenizer([long]).ids[:, :77]))
    assert _rel(cond.pooled, first.pooled) < 1e-6
    plain = encoder(tokenizer(["a red cube"]))
    weighted = encoder(tokenizer(["a (red:1.3) cube"]))
    assert _rel(weighted.embeds, plain.embeds) > 1e-3
    for part in (slice(0, 32), slice(32, 64)):  # each tower keeps its mean ("original")
        a, b = plain.embeds[..., part].mean(), weighted.embeds[..., part].mean()
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert torch.equal(weighted.pooled, plain.pooled)  # emphasis leaves the pooled vector


def _reference(pipe, prompt, negative, seed, steps=6, size=32, scale=6.0):
    out = pipe(
        prompt,
        negative_prompt=negative,
        num_inference_steps=steps,
        guidance_scale=scale,
        height=size,
        width=size,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return np.round(out.images[0] * 255).astype(np.int16)


def _ours(checkpoint, prompt, negative, seed, steps=6, size=32, scale=6.0, **build):
    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(checkpoint), **build)
    result = pipe(
        prompt,
        negative_prompt=negative,
        steps=steps,
        cfg_scale=scale,
        seed=seed,
        width=size,
        height=size,
        sampler="euler",
        schedule="linspace",
    )
    return np.asarray(result.images[0]).astype(np.int16), result


@pytest.mark.parametrize("source", SOURCES)
def test_same_image_as_diffusers(tiny_sdxl, source):
    pipe, *_ = tiny_sdxl
    checkpoint, extra = _source(tiny_sdxl, source)
    seed = 1234
    expected = _reference(pipe, PROMPT, NEGATIVE, seed)
    got, result = _ours(checkpoint, PROMPT, NEGATIVE, seed, **extra)
    assert got.shape == expected.shape == (32, 32, 3)
    assert np.abs(got - expected).max() <= 2
    assert expected.std() > 1  # not a flat image: the comparison means something
    assert "Size: 32x32" in result.infotexts[0]


def test_empty_negative_as_diffusers_zeros(tiny_sdxl):
    """An empty negative prompt is zeros, as A1111 and diffusers' negative_prompt=None."""
    pipe, folder, _ = tiny_sdxl
    expected = _reference(pipe, PROMPT, None, 7)
    got, _ = _ours(folder, PROMPT, "", 7)
    assert np.abs(got - expected).max() <= 2


def test_vae_decodes_in_fp32_under_fp16(tiny_sdxl):
    """SDXL's VAE (force_upcast) works in float32 when the model is half precision, as
    diffusers' force_upcast does (fp16 activations overflow into black images)."""
    from t2i.payloads import Latent
    from t2i_ldm.vae import LdmDecoder

    _, folder, _ = tiny_sdxl
    vae = load_models(folder).vae
    assert vae.config.force_upcast and vae.config.scaling_factor == 0.13025
    decoder = LdmDecoder(vae).to(dtype=torch.float16)
    assert vae.dtype == torch.float16
    image = decoder.decode(Latent(torch.randn(1, 4, 8, 8, dtype=torch.float16)))
    assert vae.dtype == torch.float32 and torch.isfinite(image.pixels).all()


def test_conditioning_micro_sets_the_refiners_score(tiny_sdxl_refiner):
    """Conditioning.micro (B, 1) replaces the refiner's aesthetic score for its rows."""
    from t2i.payloads import Conditioning

    _, folder, _ = tiny_sdxl_refiner
    unet = load_models(folder).unet
    predictor = UNetPredictor(unet, MicroConditioning(factor=2))
    x = torch.zeros(2, 4, 8, 8)
    cond = Conditioning(torch.zeros(2, 77, 32), pooled=torch.ones(2, 32))
    scored = Conditioning(
        torch.zeros(2, 77, 32), pooled=torch.ones(2, 32), micro=torch.tensor([[6.0], [2.5]])
    )
    expected = sdxl_vector(torch.ones(2, 32), torch.tensor([[16.0, 16, 0, 0, 6.0]] * 2), 8)
    assert torch.equal(predictor.vector(x, cond), expected)
    got = predictor.vector(x, scored)
    assert torch.equal(got[0], expected[0]) and not torch.equal(got[1], expected[1])
    both = Conditioning.cat([scored, scored])
    assert both.micro.shape == (4, 1)
    with pytest.raises(ValueError, match="micro"):
        Conditioning.cat([cond, scored])


def test_clip_skip_as_diffusers(tiny_sdxl):
    """Our clip_skip 2 (A1111's numbering) is diffusers' SDXL clip_skip=1."""
    pipe, folder, _ = tiny_sdxl
    tokenizer = create_clip_tokenizer(checkpoint=folder)
    encoder = create_clip_text_encoder(checkpoint=folder, clip_skip=2)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(
            PROMPT, device="cpu", negative_prompt=NEGATIVE, clip_skip=1
        )
    ours = encoder(tokenizer([PROMPT]))
    assert _rel(ours.embeds, embeds) < 1e-5 and _rel(ours.pooled, pooled) < 1e-5


def test_sdxl_embedding_pairs(tiny_sdxl, tmp_path):
    """An SDXL textual-inversion file (clip_l + clip_g) reaches both towers by its name."""
    from safetensors.torch import save_file

    _, folder, _ = tiny_sdxl
    g = torch.Generator().manual_seed(3)
    pair = {"clip_l": torch.randn(2, 32, generator=g), "clip_g": torch.randn(2, 32, generator=g)}
    save_file(pair, str(tmp_path / "xlstyle.safetensors"))
    emb = {"embeddings_dir": tmp_path}
    tokenizer = create_clip_tokenizer(checkpoint=folder, **emb)
    encoder = create_clip_text_encoder(checkpoint=folder, **emb)
    with_it = encoder(tokenizer(["a red cube in xlstyle"]))
    plain = create_clip_text_encoder(checkpoint=folder)(
        create_clip_tokenizer(checkpoint=folder)(["a red cube in"])
    )
    assert with_it.embeds.shape == plain.embeds.shape == (1, 77, 64)
    assert _rel(with_it.embeds[:, :4], plain.embeds[:, :4]) < 1e-6  # causal: before it
    assert _rel(with_it.embeds, plain.embeds) > 1e-3


def test_sdxl_hires_fix_runs(tiny_sdxl):
    """Hires fix on SDXL: the second pass's micro-conditioning is the hires size."""
    _, folder, _ = tiny_sdxl
    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder), hires=True)
    result = pipe(PROMPT, steps=3, seed=1, width=32, height=32, hr_scale=2.0)
    assert result.images[0].size == (64, 64)
    assert "Hires upscale: 2" in result.infotexts[0]
