"""SDXL base + refiner as one ``ldm`` recipe (A1111's Refiner, ``refiner_switch_at``) against
diffusers' ensemble of expert denoisers (``StableDiffusionXLPipeline(denoising_end=0.8)`` then
``StableDiffusionXLImg2ImgPipeline(denoising_start=0.8)``) on random tiny weights, Euler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i import Engine
from t2i.diffusion.nodes import switch_index
from t2i.engine import EngineError
from t2i.testing import make_manager
from t2i_ldm import plugin

diffusers = pytest.importorskip("diffusers")

PROMPT, NEGATIVE = "a red cube on top of a blue sphere", "a small dog"


def _diffusers(base, refiner, seed, steps=10, switch=0.8):
    g = torch.Generator().manual_seed(seed)
    common = dict(negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=6.0)
    latents = base(
        PROMPT, denoising_end=switch, height=32, width=32, generator=g, output_type="latent",
        **common,
    ).images  # fmt: skip
    out = refiner(PROMPT, image=latents, denoising_start=switch, output_type="np", **common)
    return np.round(out.images[0] * 255).astype(np.int16)


def _engine(checkpoint, refiner, **options):
    return Engine.build(
        "ldm",
        plugins=make_manager(plugin),
        checkpoint=str(checkpoint),
        refiner=str(refiner),
        **options,
    )


def _run(pipe, seed, steps=10):
    return pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        steps=steps,
        cfg_scale=6.0,
        seed=seed,
        width=32,
        height=32,
        sampler="euler",
        schedule="linspace",
    )


@pytest.mark.parametrize("source", ["diffusers_folder", "single_file"])
def test_base_and_refiner_as_diffusers(tiny_sdxl, tiny_sdxl_refiner, source):
    base, folder, single = tiny_sdxl
    refiner, r_folder, r_single = tiny_sdxl_refiner
    expected = _diffusers(base, refiner, seed=5, switch=0.3)
    if source == "diffusers_folder":
        build = {}
    else:
        build = {"tokenizer": str(folder / "tokenizer"), "text_head_dim": 16}
        folder, r_folder = single, r_single
    result = _run(_engine(folder, r_folder, refiner_switch_at=0.3, **build), seed=5)
    got = np.asarray(result.images[0]).astype(np.int16)
    assert np.abs(got - expected).max() <= 2
    info = result.infotexts[0]
    name = "pipeline" if source == "diffusers_folder" else "model ["
    assert f"Refiner: {name}" in info and "Refiner switch at: 0.3" in info, info
    if source == "diffusers_folder":  # the refiner's steps show (a tiny model moves little)
        never = _run(_engine(folder, r_folder, refiner_switch_at=1.0), seed=5)
        assert np.abs(np.asarray(never.images[0]).astype(np.int16) - got).max() > 2


def test_switch_follows_a1111s_timestep_rule(tiny_sdxl):
    """(999 - t) / 1000 >= switch_at, t the nearest training timestep of the step's sigma:
    10 linspace steps at 0.8 give the base 8 steps (timesteps 999 .. 222), as diffusers'
    denoising_end=0.8."""
    from t2i_ldm.factories import create_unet_denoiser

    _, folder, _ = tiny_sdxl
    model = create_unet_denoiser(checkpoint=folder)
    ts = torch.linspace(999, 0, 10, dtype=torch.float64)
    sigmas = torch.cat([model.sigmas.double()[ts.long()], torch.zeros(1)])
    assert switch_index(model, sigmas, 0.8) == 8
    assert switch_index(model, sigmas, 1.0) == 10  # never: the base runs every step
    assert switch_index(model, sigmas, 0.0) == 0
    assert switch_index(object(), sigmas, 0.5) == 5  # no sigma table: by steps


def test_refiner_bad_input(tiny_sdxl, tiny_sdxl_refiner, tiny_sd):
    _, folder, _ = tiny_sdxl
    _, r_folder, _ = tiny_sdxl_refiner
    _, sd_folder = tiny_sd
    with pytest.raises(EngineError, match="not an SDXL refiner"):
        _engine(folder, sd_folder)
    with pytest.raises(EngineError, match="not an SDXL refiner"):
        _engine(folder, folder)
    with pytest.raises(EngineError, match="needs an SDXL base"):
        _engine(sd_folder, r_folder)
    with pytest.raises(EngineError, match="refiner_switch_at"):
        _engine(folder, r_folder, refiner_switch_at=1.5)
