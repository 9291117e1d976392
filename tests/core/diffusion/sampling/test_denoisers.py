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
