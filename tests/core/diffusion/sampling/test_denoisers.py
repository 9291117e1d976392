"""Denoiser adapters against the diffusers/VP formulas in float64."""

from __future__ import annotations

import math

import pytest
import torch

from t2i.diffusion.sampling import ContinuousDenoiser, DiscreteDenoiser
from t2i.diffusion.schedules import get_alphas_cumprod

F64 = torch.float64


def _capture():
    seen = {}

    def net(x_in, t, cond):
        seen["x_in"], seen["t"] = x_in, t
        return seen["out"]

    return net, seen


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_discrete_adapter_matches_vp_formulas(prediction_type):
    ac = get_alphas_cumprod("scaled_linear", 1000)
    net, seen = _capture()
    model = DiscreteDenoiser(net, ac, prediction_type)
    t_int = torch.randint(0, 1000, (3,))
    a = ac[t_int].reshape(-1, 1, 1, 1)
    x0 = torch.randn(3, 4, 5, 5, dtype=F64)
    eps = torch.randn_like(x0)
    x_vp = a.sqrt() * x0 + (1 - a).sqrt() * eps  # DDPM forward process
    sigma = ((1 - a) / a).sqrt().flatten()
    x = x_vp / a.sqrt()  # Karras x
    seen["out"] = {
        "epsilon": eps,
        "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0,  # Salimans & Ho v
        "sample": x0,
    }[prediction_type]
    out = model(x, sigma, None)
    torch.testing.assert_close(out, x0)
    torch.testing.assert_close(seen["x_in"], x_vp)
    torch.testing.assert_close(seen["t"], t_int.to(F64), atol=1e-6, rtol=0)


def test_sigma_to_t_interpolates_log_sigma_and_inverts():
    ac = get_alphas_cumprod("scaled_linear", 1000)
    model = DiscreteDenoiser(lambda x, t, c: x, ac)
    t = torch.rand(5, dtype=F64) * 999
    torch.testing.assert_close(model.sigma_to_t(model.t_to_sigma(t)), t)
    lo = int(t[0].floor())
    w = float(t[0]) - lo
    s = math.exp((1 - w) * math.log(model.sigmas[lo]) + w * math.log(model.sigmas[lo + 1]))
    assert math.isclose(float(model.t_to_sigma(t[:1])), s, rel_tol=1e-12)
    q = DiscreteDenoiser(lambda x, t, c: x, ac, quantize=True)
    assert torch.equal(q.sigma_to_t(q.t_to_sigma(t)), t.round())
    # out of range sigmas clamp to the table ends
    ends = model.sigma_to_t(torch.tensor([1e-6, 1e3], dtype=F64))
    assert ends.tolist() == [0.0, 999.0]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample", "edm"])
def test_continuous_adapter_preconditioning(prediction_type):
    sd = 0.5
    net, seen = _capture()
    model = ContinuousDenoiser(
        net, 0.002, 80.0, prediction_type, sigma_data=sd, noise_input=lambda s: s.log() / 4
    )
    x = torch.randn(2, 3, 4, 4, dtype=F64)
    sigma = torch.tensor([0.3, 7.0], dtype=F64)
    s = sigma.reshape(-1, 1, 1, 1)
    out = torch.randn_like(x)
    seen["out"] = out
    got = model(x, sigma, None)
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / (s**2 + sd**2).sqrt()
    expected = {
        "epsilon": x - s * out,
        "v_prediction": c_skip * x - c_out * out,
        "sample": out,
        "edm": c_skip * x + c_out * out,  # Karras et al. 2022, table 1
    }[prediction_type]
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(seen["x_in"], x / (s**2 + sd**2).sqrt())
    torch.testing.assert_close(seen["t"], sigma.log() / 4)


def test_adapter_errors():
    ac = get_alphas_cumprod("scaled_linear", 100)
    with pytest.raises(ValueError, match="prediction_type"):
        DiscreteDenoiser(lambda *a: a[0], ac, "eps")
    with pytest.raises(ValueError, match="decreasing"):
        DiscreteDenoiser(lambda *a: a[0], ac.flip(0))
    with pytest.raises(ValueError, match="sigma_min"):
        ContinuousDenoiser(lambda *a: a[0], 1.0, 0.5)


# -- training losses -------------------------------------------------------------------------
def _net(x_in, t, cond):
    """A fixed nonlinear 'network' of its input and timestep (so the loss depends on both)."""
    return torch.tanh(1.3 * x_in + 0.2 * x_in.roll(1, -1) + t.reshape(-1, 1, 1, 1) / 700)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_discrete_loss_is_the_ddpm_objective(prediction_type):
    ac = get_alphas_cumprod("scaled_linear", 1000)
    model = DiscreteDenoiser(_net, ac, prediction_type)
    t = torch.tensor([0, 17, 500, 999])
    x0 = torch.randn(4, 3, 5, 5, dtype=F64)
    noise = torch.randn_like(x0)
    loss = model.loss(x0, None, noise=noise, sigma=model.sigmas[t])
    # Ho et al. 2020: x_t = sqrt(a) x0 + sqrt(1 - a) eps at the trained timestep t
    a = ac[t].reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    target = {
        "epsilon": noise,
        "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * x0,  # Salimans & Ho 2022
        "sample": x0,
    }[prediction_type]
    expected = ((_net(x_t, t.to(F64), None) - target) ** 2).mean((1, 2, 3))
    assert loss.shape == (4,)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def test_a_perfect_prediction_has_zero_loss_and_the_loss_has_gradients():
    ac = get_alphas_cumprod("scaled_linear", 1000)
    x0 = torch.randn(2, 3, 4, 4, dtype=F64)
    noise = torch.randn_like(x0)
    oracle = DiscreteDenoiser(lambda x_in, t, c: noise, ac)
    sigma = oracle.sigmas[torch.tensor([3, 800])]
    assert oracle.loss(x0, None, noise=noise, sigma=sigma).abs().max() < 1e-12
    w = torch.ones((), dtype=F64, requires_grad=True)
    model = DiscreteDenoiser(lambda x_in, t, c: w * x_in, ac)
    model.loss(x0, None, noise=noise, sigma=sigma).mean().backward()
    assert w.grad is not None and w.grad != 0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample", "edm"])
def test_continuous_loss_targets_and_edm_weighting(prediction_type):
    sd = 0.5
    model = ContinuousDenoiser(
        _net, 0.002, 80.0, prediction_type, sigma_data=sd, noise_input=lambda s: s.log() / 4
    )
    x0 = torch.randn(3, 2, 4, 4, dtype=F64)
    noise = torch.randn_like(x0)
    sigma = torch.tensor([0.05, 1.0, 20.0], dtype=F64)
    loss = model.loss(x0, None, noise=noise, sigma=sigma)
    s = sigma.reshape(-1, 1, 1, 1)
    x = x0 + s * noise
    if prediction_type == "edm":  # Karras et al. 2022, eq. 2 and table 1: lambda * |D - x0|^2
        weight = (s**2 + sd**2) / (s * sd) ** 2
        expected = (weight * (model(x, sigma, None) - x0) ** 2).mean((1, 2, 3))
    else:
        out = _net(x / (s**2 + sd**2).sqrt(), sigma.log() / 4, None)
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        target = {"epsilon": noise, "v_prediction": (c_skip * x - x0) / c_out, "sample": x0}
        expected = ((out - target[prediction_type]) ** 2).mean((1, 2, 3))
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
