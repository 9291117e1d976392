"""The Efficient U-Net's three changes (Saharia et al. 2022, appendix B.1) and its text
conditioning, checked on a small random network through forward hooks."""

from __future__ import annotations

import attrs
import pytest
import torch
from t2i_imagen.efficient_unet import SKIP_SCALE, EfficientUNet, EfficientUNetConfig

CFG = EfficientUNetConfig(
    stem_channels=16, channels=(16, 32, 32), blocks=(1, 2, 3), strides=(1, 2, 2),
    cross_attention=(False, True, True), self_attention=(False, False, True),
    text_dim=24, pooled_dim=24, heads=2, groups=8,
)  # fmt: skip


def _random(cfg=CFG, seed=None):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,))) if seed is None else seed)
    net = EfficientUNet(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():  # no zero-initialised layer: every path is live
            p.normal_(0, 0.1)
    return net


def _inputs(cfg=CFG, batch=2, size=16, tokens=5):
    x = torch.randn(batch, cfg.in_channels, size, size)
    t = torch.rand(batch) * 999
    text = torch.randn(batch, tokens, cfg.text_dim)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[:, -2:] = False
    return x, t, text, mask, torch.randn(batch, cfg.pooled_dim)


def test_parameters_sit_at_low_resolution_and_blocks_run_after_downsampling():
    net, seen = _random(), {}
    for i, level in enumerate(net.down_levels):
        level.blocks[0].register_forward_pre_hook(
            lambda m, a, i=i: seen.__setitem__(i, a[0].shape[-1])
        )
    with torch.no_grad():
        out = net(*_inputs(size=16))
    assert out.shape == (2, 3, 16, 16)
    assert seen == {0: 16, 1: 8, 2: 4}  # a DBlock's convolutions run after its downsampling
    per_level = [sum(p.numel() for p in lv.parameters()) for lv in net.down_levels]
    assert per_level == sorted(per_level)  # more parameters at lower resolution


def test_skips_are_scaled_and_ublocks_upsample_last():
    net, downs, ups = _random(), {}, {}
    for i, level in enumerate(net.down_levels):
        level.register_forward_hook(lambda m, a, out, i=i: downs.__setitem__(i, out))
    for j, level in enumerate(net.up_levels):
        level.register_forward_pre_hook(lambda m, a, j=j: ups.__setitem__(j, a[0]))
    with torch.no_grad():
        net(*_inputs(size=16))
    for j, i in enumerate(reversed(range(len(CFG.channels)))):
        skip = ups[j][:, -CFG.channels[i] :]
        torch.testing.assert_close(skip, downs[i] * SKIP_SCALE)
        assert ups[j].shape[-1] == downs[i].shape[-1]  # the UBlock's blocks run before upsampling


def test_text_reaches_the_output_through_mask_and_pooled_vector():
    net = _random()
    x, t, text, mask, pooled = _inputs()
    with torch.no_grad():
        ref = net(x, t, text, mask, pooled)
        padded = text.clone()
        padded[:, -2:] = (
            torch.randn_like(padded[:, -2:]) * 3
        )  # masked positions: ignored by cross-attention and the pooling
        torch.testing.assert_close(net(x, t, padded, mask, pooled), ref)
        real = text.clone()
        real[:, 0] = torch.randn_like(
            real[:, 0]
        )  # a real token (not a shift: text is layer-normed)
        assert not torch.allclose(net(x, t, real, mask, pooled), ref, atol=1e-5)
        assert not torch.allclose(net(x, t, text, mask, pooled + 1.0), ref, atol=1e-5)


def test_super_resolution_needs_the_noise_level():
    cfg = attrs.evolve(CFG, in_channels=6, noise_conditioning=True)
    net = _random(cfg)
    x, t, text, mask, pooled = _inputs(cfg)
    with pytest.raises(ValueError, match="noise_level"):
        net(x, t, text, mask, pooled)
    with torch.no_grad():
        low, high = (net(x, t, text, mask, pooled, torch.full((2,), v)) for v in (0.0, 900.0))
    assert not torch.allclose(low, high, atol=1e-5)


def test_fresh_network_predicts_zero_and_sizes_are_checked():
    net = EfficientUNet(CFG).eval()
    x, t, text, mask, pooled = _inputs()
    with torch.no_grad():
        assert float(net(x, t, text, mask, pooled).abs().max()) == 0.0  # zero-initialised output
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(1, 3, 18, 18), t[:1], text[:1], mask[:1], pooled[:1])
    with pytest.raises(ValueError, match="one per level"):
        attrs.evolve(CFG, blocks=(1, 2))
