"""Schedules: trained beta tables against diffusers, sigma schedules against float64 formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from t2i.diffusion.registration import register_schedules
from t2i.diffusion.sampling import ContinuousDenoiser, DiscreteDenoiser
from t2i.diffusion.schedules import (
    get_alphas_cumprod,
    get_betas,
    get_sigmas_ddim_uniform,
    get_sigmas_exponential,
    get_sigmas_karras,
    get_sigmas_normal,
    get_sigmas_polyexponential,
    get_sigmas_simple,
    sigmas_from_alphas_cumprod,
)
from t2i.registry import ComponentRegistry, Registrar


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_betas_match_diffusers(name):
    diffusers = pytest.importorskip("diffusers")
    kwargs = {
        "linear": {"beta_start": 0.0001, "beta_end": 0.02},
        "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
        "squaredcos_cap_v2": {},
    }[name]
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, **kwargs)
    ours = get_betas(name, 1000, **kwargs)
    torch.testing.assert_close(ours, sched.betas.to(torch.float64), rtol=1e-6, atol=1e-9)
    ac = get_alphas_cumprod(name, 1000, **kwargs)
    torch.testing.assert_close(ac, sched.alphas_cumprod.to(torch.float64), rtol=1e-5, atol=1e-8)


def test_scaled_linear_endpoints_and_sigmas():
    betas = get_betas("scaled_linear", 1000)
    assert math.isclose(float(betas[0]), 0.00085) and math.isclose(float(betas[-1]), 0.012)
    ac = get_alphas_cumprod("scaled_linear", 1000)
    sig = sigmas_from_alphas_cumprod(ac)
    assert bool((sig[1:] > sig[:-1]).all())
    assert math.isclose(float(sig[-1]), 14.6146, rel_tol=1e-4)  # SD's well-known sigma_max


def test_unknown_beta_schedule_lists_choices():
    with pytest.raises(ValueError, match="scaled_linear"):
        get_betas("cosine")


def _rand_range(seed):
    g = np.random.default_rng(seed)
    lo = float(g.uniform(0.01, 0.1))
    return lo, float(lo * g.uniform(50, 500))


def test_karras_matches_formula():
    lo, hi = _rand_range(0)
    n = int(np.random.default_rng(1).integers(3, 30))
    rho = 7.0
    expected = [
        (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        for i in range(n)
    ] + [0.0]
    torch.testing.assert_close(
        get_sigmas_karras(n, lo, hi), torch.tensor(expected, dtype=torch.float64)
    )


def test_exponential_and_polyexponential():
    lo, hi = _rand_range(2)
    s = get_sigmas_exponential(9, lo, hi)
    ratios = s[1:-1] / s[:-2]
    torch.testing.assert_close(ratios, ratios[:1].expand_as(ratios))  # geometric
    assert math.isclose(float(s[0]), hi) and math.isclose(float(s[-2]), lo) and s[-1] == 0
    torch.testing.assert_close(get_sigmas_polyexponential(9, lo, hi, rho=1.0), s)
    p2 = get_sigmas_polyexponential(9, lo, hi, rho=2.0)
    assert math.isclose(float(p2[0]), hi) and math.isclose(float(p2[-2]), lo)
    assert not torch.allclose(p2, s)


def test_table_schedules_follow_their_definitions():
    table = sigmas_from_alphas_cumprod(get_alphas_cumprod("scaled_linear", 1000))
    # simple: every T/n-th sigma from the top
    s = get_sigmas_simple(table, 10)
    torch.testing.assert_close(s[:-1], table[[999 - 100 * i for i in range(10)]])
    # ddim_uniform: timesteps 1, 1 + T//n, ...
    d = get_sigmas_ddim_uniform(table, 20)
    torch.testing.assert_close(d[:-1], table[list(range(1, 1000, 50))[::-1]])
    # normal: even fractional timesteps with log-sigma interpolation
    nrm = get_sigmas_normal(table, 7)
    for k, t in enumerate(np.linspace(999, 0, 7)):
        lo_i = min(math.floor(t), 998)
        w = t - lo_i
        expect = math.exp((1 - w) * math.log(table[lo_i]) + w * math.log(table[lo_i + 1]))
        assert math.isclose(float(nrm[k]), expect, rel_tol=1e-12)
    sgm = get_sigmas_normal(table, 7, sgm=True)
    assert math.isclose(float(sgm[0]), float(table[-1])) and float(sgm[-2]) > float(table[0])


@pytest.fixture
def schedule_registry():
    reg = ComponentRegistry()
    register_schedules(Registrar(reg, "schedule", "builtins"))
    return reg


def _discrete():
    return DiscreteDenoiser(lambda x, t, c: x, get_alphas_cumprod("scaled_linear", 1000))


@pytest.mark.parametrize("steps", [1, 7, 20])
def test_every_registered_schedule_is_descending_and_ends_at_zero(schedule_registry, steps):
    model = _discrete()
    for name in schedule_registry.names("schedule"):
        s = schedule_registry.create("schedule", name).get_sigmas(model, steps)
        assert s.dtype == torch.float64 and s.device.type == "cpu", name
        assert s[-1] == 0 and bool((s[1:] <= s[:-1]).all()), name
        assert float(s[0]) <= model.sigma_max * (1 + 1e-9), name
        if name != "ddim_uniform":  # ComfyUI's ddim_uniform may give a few more steps
            assert len(s) == steps + 1, name


def test_schedule_errors(schedule_registry):
    model = _discrete()
    with pytest.raises(ValueError, match="steps must be"):
        schedule_registry.create("schedule", "karras").get_sigmas(model, 0)
    cont = ContinuousDenoiser(lambda x, s, c: x, 0.002, 80.0)
    with pytest.raises(TypeError, match="no 'sigmas' table"):
        schedule_registry.create("schedule", "leading").get_sigmas(cont, 10)
    assert len(schedule_registry.create("schedule", "Karras").get_sigmas(cont, 5)) == 6
    with pytest.raises(KeyError, match="Available schedules"):
        schedule_registry.get("schedule", "karas_v2")
