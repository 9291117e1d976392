"""DPM++ SDE parity with diffusers' ``DPMSolverSDEScheduler``, float64, 1e-5 relative.

Both run the same network (through :class:`DiscreteDenoiser`) from the same initial
noise, in Karras' ``x``. diffusers draws its step noise from a Brownian tree
(``BrownianTreeNoiseSampler``, torchsde); here that class is replaced by a
:class:`KeyedNoise` that hands out pre-drawn tensors by the ``(sigma, sigma_next)`` of
the call, and the same object is our ``noise_sampler``, so both get the same noise.

How the schedulers line up: diffusers' table is ``sigmas = [s0, s1, s1, ..., s_{n-1},
s_{n-1}, 0]`` and it alternates two ``step`` calls per step of ours. The first-order call
(model at ``s_i``) is our stage 1: an ancestral step to the midpoint ``sqrt(s_i
s_{i+1})`` (``lambda + h/2``), noise ``(s_i, s_mid)``; the second-order call (model at the
midpoint, timestep ``_second_order_timesteps``) is our stage 2 from the stored sample,
noise ``(s_i, s_{i+1})``. With ``r = 1/2`` our combination ``(1 - 1/(2r)) D + 1/(2r) D_2``
is diffusers' ``D_2`` alone. The last step into 0 is one Euler call in both (``x = D``).
Not covered: ``eta != 1`` and ``r != 1/2`` (diffusers hard-codes both), ``s_noise != 1``,
and the Brownian tree itself (our default step noise is per-row seeded Gaussian). The
sigma tables agree to ~1e-5 (diffusers' are float32), which bounds the final error.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("torchsde")  # imported by diffusers' scheduling_dpmsolver_sde

from diffusers.schedulers import scheduling_dpmsolver_sde  # noqa: E402
from sampling_reference import F64, SHAPE, KeyedNoise, make_net, rel_err, run_diffusers  # noqa: E402

from t2i.diffusion.sampling import DiscreteDenoiser, sample_dpmpp_sde  # noqa: E402
from t2i.diffusion.schedules import get_alphas_cumprod, get_sigmas_karras, get_sigmas_linspace  # noqa: E402

TOL = 1e-5
SD = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)


def step_noise_keys(sigmas: list[float]) -> list[tuple[float, float]]:
    """The noise calls of a run: ``(s, s_mid)`` and ``(s, s_next)`` per step not into 0."""
    keys = []
    for s, s_next in pairwise(sigmas):
        if s_next > 0:
            keys += [(s, math.sqrt(s * s_next)), (s, s_next)]
    return keys


@pytest.mark.parametrize("spacing", ["karras", "linspace"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_dpmpp_sde_matches_diffusers(monkeypatch, spacing, prediction_type):
    steps = 10
    net = make_net(10)
    model = DiscreteDenoiser(net, get_alphas_cumprod("scaled_linear", 1000), prediction_type)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(110), dtype=F64)
    if spacing == "karras":
        sigmas = get_sigmas_karras(steps, model.sigma_min, model.sigma_max)
        kwargs = {"use_karras_sigmas": True}
    else:
        sigmas = get_sigmas_linspace(model.sigmas, steps)
        kwargs = {"timestep_spacing": "linspace"}  # the scheduler's default
    sched = diffusers.DPMSolverSDEScheduler(**SD, prediction_type=prediction_type, **kwargs)
    sched.set_timesteps(steps)
    torch.testing.assert_close(
        sigmas, sched.sigmas.to(F64).unique_consecutive(), rtol=1e-5, atol=1e-6
    )

    keyed = KeyedNoise(step_noise_keys(sigmas.tolist()), seed=12)
    monkeypatch.setattr(scheduling_dpmsolver_sde, "BrownianTreeNoiseSampler", lambda *a, **k: keyed)
    x0 = noise * float(sigmas[0])
    ours = sample_dpmpp_sde(model, x0.clone(), sigmas, cond=None, noise_sampler=keyed)
    assert keyed.calls == [1] * len(keyed.keys)  # each noise drawn once, in any order
    ref = run_diffusers(sched, x0.clone(), net, steps=steps)
    assert keyed.calls == [2] * len(keyed.keys)  # diffusers asked for the same ones
    assert rel_err(ours, ref) < TOL
