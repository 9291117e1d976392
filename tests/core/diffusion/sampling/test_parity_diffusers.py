"""Trajectory parity with diffusers' schedulers (test-only reference), float64, 1e-5 relative.

The same network, the same initial noise and the same per-step noise are fed to our
sampler (through :class:`DiscreteDenoiser`) and to a hand-driven diffusers loop.
diffusers' k-samplers (Euler, Heun, LMS, KDPM2) work in Karras' ``x``; its timestep
samplers (DDIM, DDPM, PNDM, DPM-Solver, UniPC) in ``x_vp = x / sqrt(1 + sigma^2)``, so
those start from ``x_vp = x / sqrt(1 + sigma_0^2)``. Both end at sigma 0 where they agree.
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from sampling_reference import F64, SHAPE, make_net, rel_err, run_diffusers  # noqa: E402

from t2i.diffusion.sampling import (  # noqa: E402
    DiscreteDenoiser,
    sample_ddim,
    sample_ddpm,
    sample_dpm_2,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lcm,
    sample_lms,
    sample_plms,
)
from t2i.diffusion.schedules import (  # noqa: E402
    get_alphas_cumprod,
    get_sigmas_exponential,
    get_sigmas_karras,
    get_sigmas_leading,
    get_sigmas_linspace,
    get_sigmas_trailing,
)

TOL = 1e-5
SD = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)


def our_sigmas(model, spacing: str, steps: int) -> torch.Tensor:
    if spacing == "leading":
        return get_sigmas_leading(model.sigmas, steps, steps_offset=1)
    if spacing == "trailing":
        return get_sigmas_trailing(model.sigmas, steps)
    if spacing == "linspace":
        return get_sigmas_linspace(model.sigmas, steps)
    if spacing == "karras":
        return get_sigmas_karras(steps, model.sigma_min, model.sigma_max)
    if spacing == "exponential":
        return get_sigmas_exponential(steps, model.sigma_min, model.sigma_max)
    raise AssertionError(spacing)


def spacing_kwargs(spacing: str) -> dict:
    if spacing == "karras":
        return {"use_karras_sigmas": True}
    if spacing == "exponential":
        return {"use_exponential_sigmas": True}
    return {"timestep_spacing": spacing}


def setup(prediction_type="epsilon", seed=0, quantize=False):
    net = make_net(seed)
    model = DiscreteDenoiser(
        net, get_alphas_cumprod("scaled_linear", 1000), prediction_type, quantize=quantize
    )
    g = torch.Generator().manual_seed(seed + 100)
    noise = torch.randn(SHAPE, generator=g, dtype=F64)
    return net, model, noise


KSAMPLERS = {
    "euler": ("EulerDiscreteScheduler", sample_euler),
    "heun": ("HeunDiscreteScheduler", sample_heun),
    "lms": ("LMSDiscreteScheduler", sample_lms),
    "dpm_2": ("KDPM2DiscreteScheduler", sample_dpm_2),
}


@pytest.mark.parametrize("name", list(KSAMPLERS))
@pytest.mark.parametrize(
    "spacing,prediction_type",
    [
        ("leading", "epsilon"),
        ("trailing", "v_prediction"),
        ("linspace", "epsilon"),
        ("karras", "epsilon"),
        ("exponential", "sample"),
    ],
)
def test_k_samplers_match_diffusers(name, spacing, prediction_type):
    cls_name, fn = KSAMPLERS[name]
    if name == "dpm_2" and prediction_type == "sample":
        prediction_type = "epsilon"  # KDPM2DiscreteScheduler does not implement "sample"
    steps = 10
    net, model, noise = setup(prediction_type)
    kwargs = dict(SD, prediction_type=prediction_type, steps_offset=1, **spacing_kwargs(spacing))
    sched = getattr(diffusers, cls_name)(**kwargs)
    sigmas = our_sigmas(model, spacing, steps)
    sched.set_timesteps(steps)
    ref_sigmas = sched.sigmas.to(F64).unique_consecutive()
    torch.testing.assert_close(sigmas, ref_sigmas, rtol=1e-5, atol=1e-6)
    x0 = noise * float(sigmas[0])
    ours = fn(model, x0.clone(), sigmas, cond=None)
    ref = run_diffusers(sched, x0.clone(), net, steps=steps)
    assert rel_err(ours, ref) < TOL


def test_euler_ancestral_matches_diffusers():
    steps = 12
    net, model, noise = setup("epsilon", seed=3)
    sched = diffusers.EulerAncestralDiscreteScheduler(
        **SD, steps_offset=1, timestep_spacing="leading"
    )
    sigmas = our_sigmas(model, "leading", steps)
    x0 = noise * float(sigmas[0])
    g_ours = torch.Generator().manual_seed(7)
    ours = sample_euler_ancestral(
        model,
        x0.clone(),
        sigmas,
        cond=None,
        noise_sampler=lambda s, sn: torch.randn(SHAPE, generator=g_ours, dtype=F64),
    )
    ref = run_diffusers(
        sched, x0.clone(), net, steps=steps, generator=torch.Generator().manual_seed(7)
    )
    assert rel_err(ours, ref) < TOL


def vp_start(noise, sigma0):
    """Our Karras-space start and the equivalent diffusers VP-space start."""
    return noise * (sigma0**2 + 1) ** 0.5, noise.clone()  # diffusers starts from unit noise


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing,eta", [("leading", 0.0), ("trailing", 0.0), ("leading", 0.6)])
def test_ddim_matches_diffusers(prediction_type, spacing, eta):
    steps = 10
    net, model, noise = setup(prediction_type, seed=1)
    sched = diffusers.DDIMScheduler(
        **SD,
        prediction_type=prediction_type,
        steps_offset=1,
        timestep_spacing=spacing,
        set_alpha_to_one=True,
        clip_sample=False,
    )
    sigmas = our_sigmas(model, spacing, steps)
    x_k, x_vp = vp_start(noise, float(sigmas[0]))
    g = torch.Generator().manual_seed(11)
    noises = [torch.randn(SHAPE, generator=g, dtype=F64) for _ in range(steps)]
    it = iter(noises)
    ours = sample_ddim(model, x_k, sigmas, cond=None, eta=eta, noise_sampler=lambda s, sn: next(it))
    sched.set_timesteps(steps)
    x = x_vp.clone()
    for i, t in enumerate(sched.timesteps):
        out = net(x, t)
        x = sched.step(out, t, x, eta=eta, variance_noise=noises[i] if eta else None).prev_sample
    assert rel_err(ours, x) < TOL


def test_ddpm_matches_diffusers():
    steps = 10
    net, model, noise = setup("epsilon", seed=2)
    sched = diffusers.DDPMScheduler(
        **SD,
        steps_offset=1,
        timestep_spacing="leading",
        clip_sample=False,
        variance_type="fixed_small",
    )
    sigmas = our_sigmas(model, "leading", steps)
    x_k, x_vp = vp_start(noise, float(sigmas[0]))
    g_ours = torch.Generator().manual_seed(5)
    ours = sample_ddpm(
        model,
        x_k,
        sigmas,
        cond=None,
        noise_sampler=lambda s, sn: torch.randn(SHAPE, generator=g_ours, dtype=F64),
    )
    ref = run_diffusers(sched, x_vp, net, steps=steps, generator=torch.Generator().manual_seed(5))
    assert rel_err(ours, ref) < TOL


def test_plms_matches_diffusers_pndm():
    steps = 10
    net, model, noise = setup("epsilon", seed=4)
    sched = diffusers.PNDMScheduler(
        **SD, steps_offset=1, skip_prk_steps=True, set_alpha_to_one=True, timestep_spacing="leading"
    )
    sigmas = our_sigmas(model, "leading", steps)
    x_k, x_vp = vp_start(noise, float(sigmas[0]))
    ours = sample_plms(model, x_k, sigmas, cond=None)
    ref = run_diffusers(sched, x_vp, net, steps=steps)
    assert rel_err(ours, ref) < TOL


# DPMSolverMultistepScheduler casts fractional timesteps (exponential sigmas) to int64,
# i.e. truncates them; that quirk is not ours to copy, so its exponential runs are skipped.
@pytest.mark.parametrize("spacing", ["karras", "trailing"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_dpmpp_2m_matches_diffusers(spacing, prediction_type):
    steps = 12
    # DPMSolverMultistepScheduler rounds Karras timesteps: our quantize=True does the same
    net, model, noise = setup(prediction_type, seed=5, quantize=spacing == "karras")
    sched = diffusers.DPMSolverMultistepScheduler(
        **SD,
        prediction_type=prediction_type,
        steps_offset=1,
        algorithm_type="dpmsolver++",
        solver_order=2,
        **spacing_kwargs(spacing),
    )
    sigmas = our_sigmas(model, spacing, steps)
    sched.set_timesteps(steps)
    torch.testing.assert_close(sigmas, sched.sigmas.to(F64), rtol=1e-5, atol=1e-6)
    x_k, x_vp = vp_start(noise, float(sigmas[0]))
    ours = sample_dpmpp_2m(model, x_k, sigmas, cond=None)
    ref = run_diffusers(sched, x_vp, net, steps=steps)
    assert rel_err(ours, ref) < TOL


def test_dpmpp_2m_sde_matches_diffusers():
    steps = 12
    net, model, noise = setup("epsilon", seed=6, quantize=True)
    sched = diffusers.DPMSolverMultistepScheduler(
        **SD,
        steps_offset=1,
        algorithm_type="sde-dpmsolver++",
        solver_order=2,
        use_karras_sigmas=True,
    )
    sigmas = our_sigmas(model, "karras", steps)
    x_k, x_vp = vp_start(noise, float(sigmas[0]))
    g = torch.Generator().manual_seed(9)
    noises = [torch.randn(SHAPE, generator=g, dtype=F64) for _ in range(steps)]
    it = iter(noises)
    ours = sample_dpmpp_2m_sde(model, x_k, sigmas, cond=None, noise_sampler=lambda s, sn: next(it))
    ref = run_diffusers(sched, x_vp, net, steps=steps, noises=noises)
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize("spacing", ["karras", "trailing"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_unipc_matches_diffusers(spacing, prediction_type):
    from t2i.diffusion.sampling import sample_unipc

    steps = 10
    net, model, noise = setup(prediction_type, seed=8, quantize=spacing == "karras")
    sched = diffusers.UniPCMultistepScheduler(
        **SD,
        prediction_type=prediction_type,
        steps_offset=1,
        solver_order=2,
        solver_type="bh2",
        **spacing_kwargs(spacing),
    )
    sigmas = our_sigmas(model, spacing, steps)
    sched.set_timesteps(steps)
    torch.testing.assert_close(sigmas, sched.sigmas.to(F64), rtol=1e-5, atol=1e-6)
    x_k, x_vp = vp_start(noise, float(sigmas[0]))
    ours = sample_unipc(model, x_k, sigmas, cond=None)
    ref = run_diffusers(sched, x_vp, net, steps=steps)
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize("steps", [4, 6])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_lcm_matches_diffusers(steps, prediction_type):
    """diffusers' LCMScheduler on its own timesteps, same step noise. Its boundary blend
    ``c_skip * x`` is turned off (``timestep_scaling`` 1e6; at the default 10 it is below
    1e-5 at these timesteps): the rest is the same rule in VP space."""
    net, model, noise = setup(prediction_type, seed=4)
    sched = diffusers.LCMScheduler(**SD, prediction_type=prediction_type, timestep_scaling=1e6)
    sched.set_timesteps(steps)
    table = model.sigmas.to(F64)
    sigmas = torch.cat([table[sched.timesteps.long()], torch.zeros(1, dtype=F64)])
    x_k, x_vp = vp_start(noise, float(sigmas[0]))
    g = torch.Generator().manual_seed(13)
    noises = [torch.randn(SHAPE, generator=g, dtype=F64) for _ in range(steps - 1)]
    it = iter(noises)
    ours = sample_lcm(model, x_k, sigmas, cond=None, noise_sampler=lambda s, sn: next(it))
    x = x_vp.clone()
    g_ref = torch.Generator().manual_seed(13)
    for t in sched.timesteps:  # the last step returns the denoised sample, drawing nothing
        x = sched.step(net(x, t), t, x, generator=g_ref).prev_sample
    assert rel_err(ours, x.to(F64)) < TOL
