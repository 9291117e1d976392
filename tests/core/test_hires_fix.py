"""Hires fix (issue 20, item 4): A1111's two-pass txt2img as a graph of core nodes.

The reference is composed by hand from A1111's algorithm: the first pass at the base size;
the sample upscaled (``Latent``: bilinear, no antialias; a pixel upscaler: decode, PIL
Lanczos, encode) to ``int(size * hr_scale)``; a second sampling from it at
``denoising_strength`` with the seeds' noise drawn at the hires size.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image as PILImage

from t2i.contracts import DiffusionJob
from t2i.diffusion.sampler import img2img_sigmas
from t2i.engine import Pipeline
from t2i.infotext import parse_infotext
from t2i.payloads import Image, Latent
from t2i.recipe import diffusion_recipe
from t2i.request import RequestError
from t2i.testing import make_manager, toy_plugin

SEED, STEPS, SIZE = 12, 3, 8


def _pipe(hires: bool):
    manager = make_manager(toy_plugin)
    recipe = diffusion_recipe(
        tokenizer="toy.chars",
        text_encoder="toy.embed",
        denoiser="toy.denoiser",
        decoder="toy.identity",
        size_multiple=1,
        defaults={"width": SIZE, "height": SIZE, "steps": STEPS, "sampler": "euler"},
        hires=hires,
    )
    return Pipeline(recipe, manager, defaults={})


def _node_outputs(pipe, request, outputs):
    params = {}
    for field, targets in pipe.recipe.bindings.items():
        value = getattr(request, field, None)
        value = request.extra.get(field, value)
        for node, param in targets:
            if value is not None:
                params.setdefault(node, {})[param] = value
    return pipe.executor.run(pipe.graph, params=params, outputs=outputs)


def _reference(strength: float, upscale) -> torch.Tensor:
    plain = _pipe(False)
    request = plain.make_request("a red cube", seed=SEED, cfg_scale=3.0, guidance="cfg")
    out = _node_outputs(plain, request, ["sample", "guide", "denoiser", "decoder"])
    first = out["sample"]["samples"].samples
    up = upscale(first, out["decoder"]["decoder"])
    model, cond = out["guide"]["guided"].bind(1)
    denoiser = out["denoiser"]["model"]
    schedule = plain.manager.registry.create("schedule", request.schedule)
    sigmas = img2img_sigmas(schedule.get_sigmas(denoiser, STEPS), STEPS, strength)
    job = DiffusionJob(model, cond, sigmas, tuple(up.shape), (SEED,), init=Latent(up))
    return plain.manager.registry.create("sampler", "euler").sample(job).samples


def _latent_bilinear(x, _decoder):
    return torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", antialias=False)


def _lanczos(x, decoder):
    pil = decoder.decode(Latent(x)).to_pil()[0].resize((16, 16), PILImage.Resampling.LANCZOS)
    return decoder.encode(Image.from_pil(pil)).samples


@pytest.mark.parametrize("upscaler, upscale", [("Latent", _latent_bilinear), ("Lanczos", _lanczos)])
def test_two_passes_as_a1111(upscaler, upscale):
    pipe = _pipe(True)
    fields = dict(hr_scale=2.0, hr_upscaler=upscaler, denoising_strength=0.6)
    request = pipe.make_request("a red cube", seed=SEED, cfg_scale=3.0, guidance="cfg", **fields)
    got = _node_outputs(pipe, request, ["sample_hr"])["sample_hr"]["samples"].samples
    torch.testing.assert_close(got, _reference(0.6, upscale), rtol=1e-5, atol=1e-5)
    result = pipe.run(request)
    assert result.images[0].size == (16, 16)
    info = parse_infotext(result.infotexts[0])
    assert info["Size"] == "8x8"  # the first pass's size, as A1111 writes it
    assert info["Hires upscale"] == "2.0" and info["Hires upscaler"] == upscaler
    assert info["Denoising strength"] == "0.6"
    assert "Hires steps" not in info and "Hires prompt" not in info


def test_hires_prompt_steps_and_defaults():
    pipe = _pipe(True)
    request = pipe.make_request("a red cube", seed=1)
    out = _node_outputs(pipe, request, ["tokenize_positive", "tokenize_hr_positive", "sigmas_hr"])
    a, b = out["tokenize_positive"]["tokens"], out["tokenize_hr_positive"]["tokens"]
    assert torch.equal(a.ids, b.ids)  # no hires prompt: the prompt
    assert out["sigmas_hr"]["sigmas"].steps == STEPS  # hires steps 0: the first pass's
    info = parse_infotext(pipe.run(request).infotexts[0])
    assert info["Hires upscale"] == "2.0" and info["Denoising strength"] == "0.7"
    result = pipe("a red cube", seed=1, hr_second_pass_steps=2, hr_prompt="a blue cube")
    info = parse_infotext(result.infotexts[0])
    assert info["Hires steps"] == "2" and info["Hires prompt"] == "a blue cube"


def test_bad_hires_fields_are_refused():
    pipe = _pipe(True)
    with pytest.raises(RequestError, match="hr_scale"):
        pipe.make_request("x", hr_scale=0.5)
    with pytest.raises(RequestError, match="hr_upscaler"):
        pipe.make_request("x", hr_upscaler="ESRGAN_4x")
    with pytest.raises(RequestError, match="denoising_strength"):
        pipe.make_request("x", denoising_strength=1.5)
