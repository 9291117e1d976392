"""Inpainting with the ``ldm`` recipe on tiny random SD models (CPU, fp32).

- SD inpainting checkpoints (9-channel UNet): the same image as diffusers'
  ``StableDiffusionInpaintPipeline`` (at most 2/255) with the A1111-only steps off (the
  per-step latent blend and the paste-back, which diffusers does not do for a 9-channel
  UNet); with them on, the pixels outside the mask are the init image's.
- Ordinary checkpoints (4 channels): the image of a hand-built reference of A1111's rule
  (``CFGDenoiser``: the denoised prediction blended with the init latent outside the latent
  mask after every Euler step, the final sample blended too, decoded and pasted onto the
  init image through the mask), for each masked-content mode.

diffusers samples the VAE posterior when it encodes the init image; t2i (and this test's
reference) takes its mean, so the diffusers pipeline is given the mean too.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

from t2i import Engine, masking
from t2i.request import RequestError
from t2i.testing import make_manager
from t2i_ldm import plugin

diffusers = pytest.importorskip("diffusers")

SIZE = 32
PROMPT, NEGATIVE = "a red cube on top of a blue sphere", "a small dog"


def _init():
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (SIZE // 4, SIZE // 4, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((SIZE, SIZE), Image.BICUBIC)


def _mask(box=(8, 4, 24, 20), size=(SIZE, SIZE)):
    m = Image.new("L", size, 0)
    m.paste(255, box)
    return m


@pytest.fixture(scope="module")
def tiny_sd_contrast(make_tiny_sd, tmp_path_factory):
    """The tiny SD1 model with a VAE whose decoder shows the latents' differences."""
    return make_tiny_sd(tmp_path_factory.mktemp("tiny_sd_inpaint4"), vae_std=0.1)


_PIPES: dict = {}


def _ours(folder):
    """The ``ldm`` pipeline of ``folder``, built once per module (its components stay warm)."""
    if str(folder) not in _PIPES:
        _PIPES[str(folder)] = Engine.build(
            "ldm", plugins=make_manager(plugin), checkpoint=str(folder)
        )
    return _PIPES[str(folder)]


@contextlib.contextmanager
def _without_a1111_steps(pipe):
    """The per-step latent blend and the paste-back off (what diffusers does not do)."""
    graph = pipe.recipe.img2img_graph
    graph.set_params("mask_latent", blend=False)
    graph.set_params("paste", overlay=False)
    try:
        yield
    finally:
        graph.set_params("mask_latent", blend=True)
        graph.set_params("paste", overlay=True)


def _run(pipe, seed, **fields):
    common = dict(
        negative_prompt=NEGATIVE,
        steps=6,
        cfg_scale=6.0,
        strength=0.75,
        seed=seed,
        width=SIZE,
        height=SIZE,
        sampler="euler",
        schedule="linspace",
    )
    return pipe(PROMPT, **{**common, **fields})


def _pixels(result):
    return np.asarray(result.images[0]).astype(np.int16)


def _mean_encoder(pipe):
    def encode(image, generator):
        return pipe.vae.encode(image).latent_dist.mode() * pipe.vae.config.scaling_factor

    pipe._encode_vae_image = encode


@pytest.mark.parametrize("seed", [3, 11])
def test_inpainting_checkpoint_matches_diffusers(tiny_sd_inpaint, seed):
    ref_pipe, folder = tiny_sd_inpaint
    _mean_encoder(ref_pipe)
    init, mask = _init(), _mask()
    expected = ref_pipe(
        PROMPT,
        image=init,
        mask_image=mask,
        negative_prompt=NEGATIVE,
        num_inference_steps=6,
        guidance_scale=6.0,
        strength=0.75,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images[0]
    expected = np.round(expected * 255).astype(np.int16)
    pipe = _ours(folder)
    graph = pipe.recipe.img2img_graph
    assert graph["guide"].inputs["image_condition"].node == "inpaint_condition_guide"
    with _without_a1111_steps(pipe):  # diffusers: no blend nor paste for 9 channels
        got = _pixels(_run(pipe, seed, init_image=init, mask=mask, mask_blur=0, inpainting_fill=1))
    diff = np.abs(got - expected).max()
    assert diff <= 2, f"max pixel difference {diff}/255"
    assert expected.std() > 1


def test_inpainting_checkpoint_with_a1111_steps_keeps_the_outside(tiny_sd_inpaint):
    _, folder = tiny_sd_inpaint
    pipe = _ours(folder)
    init, mask = _init(), _mask()
    out = _run(pipe, 5, init_image=init, mask=mask, mask_blur=0, inpainting_fill=1)
    diff = np.abs(_pixels(out) - np.asarray(init).astype(np.int16))
    inside = np.asarray(mask) > 0
    assert diff[~inside].max() == 0 and diff[inside].mean() > 1
    txt2img = pipe(PROMPT, steps=3, seed=1, width=SIZE, height=SIZE)  # ones mask over grey
    assert txt2img.images[0].size == (SIZE, SIZE)
    plain = pipe(PROMPT, init_image=init, steps=3, seed=1, width=SIZE, height=SIZE)
    assert plain.images[0].size == (SIZE, SIZE)
    assert "Conditional mask weight: 1.0" in out.infotexts[0]  # A1111 writes it
    half = _run(pipe, 5, init_image=init, mask=mask, mask_blur=0, inpainting_mask_weight=0.5)
    assert "Conditional mask weight: 0.5" in half.infotexts[0]
    batch = _run(pipe, 5, init_image=init, mask=mask, mask_blur=0, batch_size=2)
    assert np.abs(_pixels(batch) - np.asarray(batch.images[1]).astype(np.int16)).max() > 0


def test_inpaint_condition_channels(tiny_sd_inpaint):
    """mask (rounded, nearest to the latent) + the latent of the init greyed by the weight."""
    from t2i.graph.node import ExecutionContext
    from t2i.payloads import Image as Pixels
    from t2i.payloads import Latent, Mask
    from t2i_ldm.inpaint import InpaintCondition

    _, folder = tiny_sd_inpaint
    pipe = _ours(folder)
    decoder = pipe.manager.registry.create("decoder", "ldm.vae", checkpoint=str(folder))
    image = Pixels.from_pil(_init())
    soft = torch.from_numpy(np.asarray(_mask(), dtype=np.float32) / 255)[None, None] * 0.6
    mask = Mask(pixels=soft, base=image, overlay=soft)
    latent = Latent(torch.zeros(1, 4, SIZE // 2, SIZE // 2))
    ctx = ExecutionContext(registry=None)

    def condition(weight, mask=mask, image=image):
        node = InpaintCondition()
        out = node.execute(
            ctx, decoder=decoder, latent=latent, image=image, mask=mask, mask_weight=weight
        )
        return out["image_condition"].image

    full, none = condition(1.0), condition(0.0)
    assert full.shape == (1, 5, SIZE // 2, SIZE // 2)
    expected_mask = torch.zeros(SIZE // 2, SIZE // 2)
    expected_mask[2:10, 4:12] = 1.0  # the box (8, 4, 24, 20) at half size; 0.6 rounds to 1
    assert torch.equal(full[0, 0], expected_mask)
    assert torch.allclose(none[:, 1:], decoder.encode(image).samples)  # weight 0: the init
    grey = decoder.encode(Pixels(torch.full((1, 3, SIZE, SIZE), 0.5))).samples
    assert torch.allclose(condition(1.0, mask=None, image=None)[:, 1:], grey)  # txt2img
    assert (condition(1.0, mask=None, image=None)[:, 0] == 1).all()


def test_inpainting_checkpoint_hires_pass_gets_its_own_condition(tiny_sd_inpaint):
    _, folder = tiny_sd_inpaint
    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder), hires=True)
    link = pipe.recipe.graph["guide_hr"].inputs["image_condition"]
    assert pipe.recipe.graph[link.node].inputs["latent"].node == "hires_upscale"
    out = pipe(PROMPT, steps=2, seed=1, width=16, height=16, hr_scale=2)
    assert out.images[0].size == (32, 32)


def _a1111_reference(ref_pipe, init, mask, seed, fill, steps=6, strength=0.75, scale=6.0):
    """A1111's img2img inpaint for a 4-channel model with k-diffusion Euler, written out."""
    vae, unet, sched = ref_pipe.vae, ref_pipe.unet, ref_pipe.scheduler
    sf = vae.config.scaling_factor
    image = init if fill == 1 else masking.fill_masked(init, mask)  # fill before encoding
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        x0 = vae.encode(pixels * 2 - 1).latent_dist.mode() * sf
        h, w = x0.shape[-2:]
        small = mask.convert("RGB").resize((w, h), Image.BICUBIC)  # latmask
        nmask = torch.from_numpy(np.around(np.asarray(small, dtype=np.float32)[..., 0] / 255))
        nmask = nmask[None, None]
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        if fill == 2:
            x0 = x0 * (1 - nmask) + noise * nmask  # the seed's noise (create_random_tensors)
        elif fill == 3:
            x0 = x0 * (1 - nmask)
        cond, uncond = ref_pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
        context = torch.cat([uncond, cond])
        sched.set_timesteps(steps)
        start = steps - int(steps * strength)
        sigmas, timesteps = sched.sigmas[start:].double(), sched.timesteps[start:]
        x = x0 + noise * float(sigmas[0])
        for i, t in enumerate(timesteps):
            s = float(sigmas[i])
            x_in = torch.cat([x, x]) / (s**2 + 1) ** 0.5
            eps_u, eps_c = unet(x_in.float(), t, encoder_hidden_states=context).sample.chunk(2)
            denoised = x - (eps_u + scale * (eps_c - eps_u)) * s
            denoised = denoised * nmask + x0 * (1 - nmask)  # apply_blend, after the model
            x = x + (x - denoised) / s * (float(sigmas[i + 1]) - s)
        x = x * nmask + x0 * (1 - nmask)
        decoded = vae.decode((x / sf).float()).sample
    gen = ((decoded[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
    gen = np.round(gen * 255).astype(np.int16)
    keep = np.asarray(mask)[..., None] == 0  # mask_for_overlay: binary at blur 0
    return np.where(keep, np.asarray(init).astype(np.int16), gen)


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_ordinary_checkpoint_follows_a1111s_blend(tiny_sd_contrast, fill):
    ref_pipe, folder = tiny_sd_contrast
    init, mask = _init(), _mask()
    seed = 21
    expected = _a1111_reference(ref_pipe, init, mask, seed, fill)
    got = _pixels(
        _run(_ours(folder), seed, init_image=init, mask=mask, mask_blur=0, inpainting_fill=fill)
    )
    diff = np.abs(got - expected).max()
    assert diff <= 2, f"masked content {fill}: max pixel difference {diff}/255"
    inside = np.asarray(mask) > 0
    assert (got[~inside] == np.asarray(init)[~inside]).all()
    assert expected[inside].std() > 5


def test_the_blend_is_what_makes_the_reference_match(tiny_sd_contrast):
    """Without the per-step blend the same request leaves A1111's image: the test above
    tells the rule apart."""
    ref_pipe, folder = tiny_sd_contrast
    init, mask = _init(), _mask()
    expected = _a1111_reference(ref_pipe, init, mask, 21, 1)
    pipe = _ours(folder)
    with _without_a1111_steps(pipe):
        got = _pixels(_run(pipe, 21, init_image=init, mask=mask, mask_blur=0, inpainting_fill=1))
    assert np.abs(got - expected).max() > 6


def test_only_masked_on_an_ordinary_checkpoint(tiny_sd):
    _, folder = tiny_sd
    init = _init().resize((64, 48))
    mask = _mask((40, 20, 52, 30), (64, 48))
    out = _run(
        _ours(folder),
        2,
        init_image=init,
        mask=mask,
        mask_blur=2,
        inpaint_full_res=True,
        inpaint_full_res_padding=4,
        width=16,
        height=16,
    )
    assert out.images[0].size == (64, 48)
    diff = np.abs(_pixels(out) - np.asarray(init).astype(np.int16))
    x1, y1, x2, y2 = masking.expand_crop_region(
        masking.crop_region(masking.blur_mask(mask, 2), 4), 16, 16, 64, 48
    )
    outside = np.ones((48, 64), bool)
    outside[y1:y2, x1:x2] = False
    assert diff[outside].max() == 0 and diff[~outside].max() > 0
    assert "Inpaint area: Only masked" in out.infotexts[0]


def test_a_mask_of_another_size_is_refused_before_any_model_work(tiny_sd):
    _, folder = tiny_sd
    with pytest.raises(RequestError, match="mask: is 16x16 but the init image is 32x32"):
        _run(_ours(folder), 1, init_image=_init(), mask=Image.new("L", (16, 16)))


def test_an_inpainting_unet_says_it_has_no_onnx_export(tiny_sd_inpaint):
    """A 9-channel UNet's export spec refuses with the reason and the fix (the ONNX
    deployment feeds the 4-channel latent only)."""
    from t2i_ldm.denoiser import LdmDenoiser
    from t2i_ldm.recipes import load_models

    _, folder = tiny_sd_inpaint
    denoiser = LdmDenoiser(load_models(folder).unet)
    with pytest.raises(ValueError, match=r"inpainting UNet \(9-channel input.*torch runtime"):
        denoiser.export_spec()
