"""Every sampler on a Gaussian toy problem whose exact answer is known (float64).

Data ``x0 ~ N(0, s_d^2 I)`` has the exact denoiser ``D(x, sigma) = x s_d^2 / (s_d^2 +
sigma^2)`` and probability-flow ODE solution ``x(0) = x(sigma_0) s_d / sqrt(s_d^2 +
sigma_0^2)``. Deterministic samplers must land on it; stochastic ones must produce
samples with standard deviation ``s_d``.
"""

from __future__ import annotations

import math

import pytest
import torch

from t2i.diffusion.sampling import (
    sample_ddim,
    sample_ddpm,
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lms,
    sample_plms,
    sample_unipc,
)
from t2i.diffusion.schedules import get_sigmas_karras

S_D = 1.0
F64 = torch.float64


class Gaussian:
    sigma_min, sigma_max = 0.01, 10.0

    def __call__(self, x, sigma, cond):
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return x * S_D**2 / (S_D**2 + s**2)


DETERMINISTIC = {
    "euler": (sample_euler, 1e-1),
    "ddim": (sample_ddim, 1e-1),
    "heun": (sample_heun, 1.5e-2),
    "dpm_2": (sample_dpm_2, 1e-2),
    "lms": (sample_lms, 6e-3),
    "plms": (sample_plms, 6e-3),
    "dpmpp_2m": (sample_dpmpp_2m, 1.5e-2),
    "unipc": (sample_unipc, 6e-3),
    "dpmpp_sde_eta0": (lambda *a, **k: sample_dpmpp_sde(*a, eta=0.0, **k), 1e-2),
    "dpmpp_2m_sde_eta0": (lambda *a, **k: sample_dpmpp_2m_sde(*a, eta=0.0, **k), 1.5e-2),
}


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_deterministic_samplers_solve_the_ode(name):
    fn, tol = DETERMINISTIC[name]
    sigmas = get_sigmas_karras(25, 0.01, 10.0)  # errors measured: about 1/2 of each tol
    noise = torch.randn(2, 3, 4, 4, dtype=F64)
    x = noise * float(sigmas[0])
    exact = x * S_D / math.sqrt(S_D**2 + float(sigmas[0]) ** 2)
    out = fn(Gaussian(), x, sigmas, cond=None)
    assert float((out - exact).abs().max() / exact.abs().max()) < tol


STOCHASTIC = {
    "euler_ancestral": sample_euler_ancestral,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "ddpm": sample_ddpm,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_sde": sample_dpmpp_sde,
}


@pytest.mark.parametrize("name", list(STOCHASTIC))
def test_stochastic_samplers_sample_the_data_distribution(name):
    sigmas = get_sigmas_karras(50, 0.01, 10.0)
    g = torch.Generator().manual_seed(0)
    shape = (8, 1, 32, 32)
    x = torch.randn(shape, generator=g, dtype=F64) * float(sigmas[0])
    out = STOCHASTIC[name](
        Gaussian(),
        x,
        sigmas,
        cond=None,
        noise_sampler=lambda s, sn: torch.randn(shape, generator=g, dtype=F64),
    )
    assert abs(float(out.std()) / S_D - 1) < 0.1
    # the reverse SDE keeps corr(x0, x_T) = s_d / sqrt(s_d^2 + sigma_max^2) (ODE samplers: 1)
    corr = float(torch.corrcoef(torch.stack([out.flatten(), x.flatten()]))[0, 1])
    assert abs(corr - S_D / math.sqrt(S_D**2 + float(sigmas[0]) ** 2)) < 0.04
