"""t2i_ldm.denoiser: the SD UNet as a Karras denoiser, against diffusers' Euler scheduler math."""

from __future__ import annotations

import pytest
import torch

from t2i.contracts import KarrasDenoiser
from t2i.payloads import Conditioning
from t2i_ldm.config import TINY_UNET, NoiseScheduleConfig
from t2i_ldm.denoiser import LdmDenoiser
from t2i_ldm.unet import UNetModel

diffusers = pytest.importorskip("diffusers")


def test_sigma_table_matches_diffusers_scaled_linear():
    ref = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    expected = ((1 - ref.alphas_cumprod.double()) / ref.alphas_cumprod.double()).sqrt()
    den = LdmDenoiser(UNetModel(TINY_UNET))
    assert isinstance(den, KarrasDenoiser)
    # diffusers computes betas in float32, we in float64: agree to float32 round-off
    torch.testing.assert_close(den.sigmas, expected, rtol=5e-5, atol=0)
    assert den.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert den.sigma_max == pytest.approx(14.6146, abs=1e-3)
    torch.testing.assert_close(
        NoiseScheduleConfig().alphas_cumprod(), ref.alphas_cumprod.double(), rtol=1e-5, atol=0
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_matches_diffusers_euler_formulas(prediction_type):
    torch.manual_seed(0)
    unet = UNetModel(TINY_UNET).eval()
    den = LdmDenoiser(unet, prediction_type)
    t = torch.tensor([120, 870])
    sigma = den.sigmas[t].float()
    x = torch.randn(2, 4, 8, 8) * (sigma[:, None, None, None] ** 2 + 1).sqrt()
    ctx = torch.randn(2, 5, 32)
    with torch.no_grad():
        got = den(x, sigma, Conditioning(ctx))
        s = sigma[:, None, None, None]
        scaled = x / (s**2 + 1).sqrt()  # EulerDiscreteScheduler.scale_model_input
        out = unet(scaled, t.float(), ctx)
    if prediction_type == "epsilon":  # EulerDiscreteScheduler.step, epsilon branch
        expected = x - s * out
    else:  # v_prediction branch
        expected = out * (-s / (s**2 + 1).sqrt()) + x / (s**2 + 1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
