"""Hinge terms and MA-GP against hand computations in float64 (DF-GAN's ``MA_GP``)."""

import pytest
import torch
from t2i_gan.losses import hinge_fake, hinge_real, ma_gp, mismatched


def test_ma_gp_of_a_linear_critic_is_two_times_the_norm_to_the_sixth():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4, dtype=torch.float64)
    v = torch.randn(5, dtype=torch.float64)
    image = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    sentence = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    scores = (image * w).flatten(1).sum(1) + sentence @ v
    norm = (w.pow(2).sum() + v.pow(2).sum()).sqrt()  # every row's gradient is (w, v)
    assert ma_gp(image, sentence, scores).item() == pytest.approx(2 * norm.item() ** 6, rel=1e-12)


def test_ma_gp_of_a_nonlinear_critic_matches_per_row_gradients():
    torch.manual_seed(1)
    image = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    sentence = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    scores = torch.tanh(image.flatten(1)).sum(1) * sentence.pow(2).sum(1)
    gp = ma_gp(image, sentence, scores)
    # by hand: d/dx = (1 - tanh^2 x) |s|^2, d/ds = 2 s sum(tanh x)
    x, s = image.detach().flatten(1), sentence.detach()
    gx = (1 - torch.tanh(x) ** 2) * s.pow(2).sum(1, keepdim=True)
    gs = 2 * s * torch.tanh(x).sum(1, keepdim=True)
    norms = torch.cat([gx, gs], 1).pow(2).sum(1).sqrt()
    assert gp.item() == pytest.approx(2 * norms.pow(6).mean().item(), rel=1e-12)
    assert gp.requires_grad  # create_graph: the penalty trains D


def test_hinge_terms_and_mismatch():
    scores = torch.tensor([2.0, 0.5, -3.0], dtype=torch.float64)
    assert hinge_real(scores).item() == pytest.approx((0 + 0.5 + 4.0) / 3)
    assert hinge_fake(scores).item() == pytest.approx((3.0 + 1.5 + 0) / 3)
    s = torch.arange(6.0).view(3, 2)
    assert mismatched(s).tolist() == [[2, 3], [4, 5], [0, 1]]


@pytest.mark.parametrize("share", [0.0, 0.25])
def test_ma_gp_sentence_share_scales_the_sentence_gradient(share):
    """``sentence_weight``: the sentence gradient's share of the norm (0: image alone)."""
    torch.manual_seed(2)
    w = torch.randn(3, 4, 4, dtype=torch.float64)
    v = torch.randn(5, dtype=torch.float64)
    image = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    sentence = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    scores = (image * w).flatten(1).sum(1) + sentence @ v
    gp = ma_gp(image, sentence, scores, weight=0.5, sentence_weight=share)
    norm = (w.pow(2).sum() + share**2 * v.pow(2).sum()).sqrt()
    assert gp.item() == pytest.approx(0.5 * norm.item() ** 6, rel=1e-12)
