"""Guidance wrappers: batched CFG, thresholding and rescale against float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i.diffusion.guidance import (
    CFGRescale,
    ClassifierFreeGuidance,
    DynamicThresholding,
    NoGuidance,
    StaticThresholding,
)
from t2i.payloads import Conditioning

F64 = torch.float64


class CondModel:
    """x0 = x (0.3 + 0.2 m) + 2 m, m the mean of the unmasked cond embeds per row; counts calls."""

    sigma_min, sigma_max = 0.03, 14.6

    def __init__(self):
        self.calls, self.batches = 0, []

    def __call__(self, x, sigma, cond):
        self.calls += 1
        self.batches.append(x.shape[0])
        m = cond.mask if cond.mask is not None else torch.ones(cond.embeds.shape[:2], dtype=bool)
        w = m.to(cond.embeds.dtype).unsqueeze(-1)  # padded tokens (Conditioning.cat) ignored
        shift = (cond.embeds * w).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)) * cond.embeds.shape[2])
        shift = shift.reshape(-1, 1, 1, 1)
        return x * (0.3 + 0.2 * shift) + shift * 2 + sigma.reshape(-1, 1, 1, 1) * 0.01


def _inputs(batch=2):
    x = torch.randn(batch, 4, 6, 6, dtype=F64)
    sigma = torch.rand(batch, dtype=F64) * 5 + 0.1
    pos = Conditioning(torch.randn(1, 3, 8, dtype=F64))
    neg = Conditioning(torch.randn(1, 5, 8, dtype=F64))
    return x, sigma, pos, neg


def _separate(model, x, sigma, pos, neg):
    b = x.shape[0]
    return model(x, sigma, pos.repeat_to(b)), model(x, sigma, neg.repeat_to(b))


def test_cfg_is_one_batched_call_and_matches_formula():
    x, sigma, pos, neg = _inputs()
    scale = float(torch.empty(()).uniform_(1.5, 12))
    model = CondModel()
    c, u = _separate(model, x, sigma, pos, neg)
    model.calls, model.batches = 0, []
    guided = ClassifierFreeGuidance().wrap(model, uncond=neg, scale=scale)
    out = guided(x, sigma, pos)
    assert model.calls == 1 and model.batches == [2 * x.shape[0]]
    torch.testing.assert_close(out, u + scale * (c - u))
    assert guided.sigma_max == model.sigma_max  # forwards the denoiser attributes


def test_none_guidance_and_scale_one_use_a_single_conditional_call():
    x, sigma, pos, neg = _inputs()
    model = CondModel()
    out = NoGuidance().wrap(model, uncond=neg, scale=7.0)(x, sigma, pos)
    assert model.batches == [x.shape[0]]
    torch.testing.assert_close(out, model(x, sigma, pos.repeat_to(2)))
    model2 = CondModel()
    ClassifierFreeGuidance().wrap(model2, uncond=neg, scale=1.0)(x, sigma, pos)
    assert model2.batches == [x.shape[0]]


def test_dynamic_thresholding_matches_numpy_reference():
    x, sigma, pos, neg = _inputs()
    p, max_value, scale = 0.9, 1.7, 9.0
    model = CondModel()
    c, u = _separate(model, x, sigma, pos, neg)
    raw = (u + scale * (c - u)).numpy()
    expected = np.empty_like(raw)
    for i in range(raw.shape[0]):
        s = np.quantile(np.abs(raw[i]).ravel(), p)
        s = min(max(s, 1.0), max_value)
        expected[i] = np.clip(raw[i], -s, s) / s
    out = DynamicThresholding(percentile=p, max_value=max_value).wrap(
        model, uncond=neg, scale=scale
    )(x, sigma, pos)
    torch.testing.assert_close(out, torch.from_numpy(expected))
    assert float(out.abs().max()) <= 1.0 + 1e-12


def test_static_thresholding_clamps():
    x, sigma, pos, neg = _inputs()
    model = CondModel()
    c, u = _separate(model, x, sigma, pos, neg)
    out = StaticThresholding().wrap(model, uncond=neg, scale=5.0)(x, sigma, pos)
    torch.testing.assert_close(out, (u + 5.0 * (c - u)).clamp(-1, 1))


def test_cfg_rescale_eps_space_matches_diffusers_formula():
    x, sigma, pos, neg = _inputs()
    phi, scale = 0.7, 6.0
    model = CondModel()
    c, u = _separate(model, x, sigma, pos, neg)
    s = sigma.reshape(-1, 1, 1, 1)
    eps_c, eps_u = (x - c) / s, (x - u) / s
    eps_cfg = eps_u + scale * (eps_c - eps_u)
    # Lin et al. 2023 Alg. 2 / diffusers rescale_noise_cfg, written out independently
    std_c = eps_c.reshape(2, -1).std(dim=1).reshape(-1, 1, 1, 1)
    std_cfg = eps_cfg.reshape(2, -1).std(dim=1).reshape(-1, 1, 1, 1)
    eps_final = phi * eps_cfg * std_c / std_cfg + (1 - phi) * eps_cfg
    out = CFGRescale(phi=phi, space="eps").wrap(model, uncond=neg, scale=scale)(x, sigma, pos)
    torch.testing.assert_close(out, x - s * eps_final)
    plain = ClassifierFreeGuidance().wrap(model, uncond=neg, scale=scale)(x, sigma, pos)
    for space in ("v", "x0"):
        zero = CFGRescale(phi=0.0, space=space).wrap(model, uncond=neg, scale=scale)
        torch.testing.assert_close(zero(x, sigma, pos), plain)
        assert not torch.allclose(
            CFGRescale(phi=0.7, space=space).wrap(model, uncond=neg, scale=scale)(x, sigma, pos),
            plain,
        )


def test_bad_guidance_input_raises_before_any_call():
    model = CondModel()
    _, _, _, neg = _inputs()
    with pytest.raises(ValueError, match="guidance scale must be >= 0"):
        ClassifierFreeGuidance().wrap(model, uncond=neg, scale=-1.0)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="percentile must be in"):
            DynamicThresholding(percentile=bad)
    with pytest.raises(ValueError, match="phi"):
        CFGRescale(phi=2.0)
    assert model.calls == 0
