"""DF-GAN's modules: the fusion's initialisation, the channel layout, shapes and range."""

import torch
from t2i_gan.models import DFBLK, Affine, GanConfig, NetC, NetD, NetG, channel_pairs


def test_affine_fusion_starts_as_identity_in_float64():
    """DF-GAN's Affine._initialize: gamma's last layer 0 weight / 1 bias, beta's all 0."""
    torch.manual_seed(0)
    affine = Affine(cond_dim=5, num_features=3).double()
    x, y = torch.randn(4, 3, 2, 2, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(affine.fc_gamma(y), torch.ones(4, 3, dtype=torch.float64))
    torch.testing.assert_close(affine.fc_beta(y), torch.zeros(4, 3, dtype=torch.float64))
    torch.testing.assert_close(affine(x, y), x, rtol=0, atol=0)
    block = DFBLK(5, 3).double()  # two identity affines, two LeakyReLU(0.2)
    expected = torch.where(x > 0, x, 0.2 * 0.2 * x)
    torch.testing.assert_close(block(x, y), expected, rtol=1e-15, atol=1e-15)


def test_channel_layout_is_dfgans_at_64_px():
    assert channel_pairs(32, 64, generator=True) == [(256, 256), (256, 128), (128, 64), (64, 32)]
    assert channel_pairs(32, 64, generator=False) == [(32, 64), (64, 128), (128, 256), (256, 256)]


def test_generator_and_discriminator_shapes(tiny_config):
    torch.manual_seed(0)
    g, d, c = NetG(tiny_config), NetD(tiny_config), NetC(tiny_config)
    z, s = torch.randn(3, tiny_config.z_dim), torch.randn(3, tiny_config.cond_dim)
    image = g(z, s)
    assert image.shape == (3, 3, 32, 32) and image.abs().max() <= 1
    features = d(image)
    assert features.shape == (3, 8 * tiny_config.nf, 4, 4)
    assert c(features, s).shape == (3,)


def test_cond_scale_multiplies_the_sentence(tiny_config):
    torch.manual_seed(0)
    scaled = NetG(GanConfig(nf=2, z_dim=8, cond_dim=6, image_size=32, cond_scale=3.0))
    plain = NetG(tiny_config)
    plain.load_state_dict(scaled.state_dict())
    z, s = torch.randn(2, 8), torch.randn(2, 6)
    torch.testing.assert_close(scaled(z, s), plain(z, 3.0 * s))


def test_sentence_norm_standardises_and_does_not_amplify_a_constant_coordinate():
    """Per-coordinate (s - mean) / std over the fitted vectors; a coordinate that never moves
    (MiniLM has such) is floored at a tenth of the median spread, not blown up."""
    from t2i_gan.models import SentenceNorm

    torch.manual_seed(0)
    vectors = torch.randn(500, 6, dtype=torch.float64) * torch.tensor([1, 2, 3, 4, 5, 6.0]) + 7
    vectors[:, 5] = 0.25  # constant
    norm = SentenceNorm(6).double().fit(vectors)
    out = norm(vectors)
    torch.testing.assert_close(out[:, :5].mean(0), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(out[:, :5].std(0), torch.ones(5, dtype=torch.float64))
    assert out[:, 5].abs().max() < 1e-6
    median = float(vectors.std(0).median())
    assert float(norm.inv_std[5]) <= 1 / (0.1 * median) + 1e-6


def test_norm_and_projection_are_ours_and_off_for_dfgan_files(tiny_config):
    """The default config (DF-GAN's) has no cond_norm / proj keys; with them on, C's score is
    the joint conv's plus <mean-pooled features, proj(s)> / sqrt(8 nf)."""
    assert not any("cond_norm" in k or "proj" in k for k in NetC(tiny_config).state_dict())
    assert not any("cond_norm" in k for k in NetG(tiny_config).state_dict())
    ours = GanConfig(nf=2, z_dim=8, cond_dim=6, image_size=32, cond_norm=True, projection=True)
    torch.manual_seed(0)
    c = NetC(ours).double()
    c.cond_norm.fit(torch.randn(50, 6, dtype=torch.float64) * 3 + 1)
    features, s = (
        torch.randn(3, 16, 4, 4, dtype=torch.float64),
        torch.randn(3, 6, dtype=torch.float64),
    )
    y = (s - c.cond_norm.mean) * c.cond_norm.inv_std
    tiled = y[:, :, None, None].expand(-1, -1, 4, 4)
    joint = c.joint_conv(torch.cat((features, tiled), 1)).view(-1)
    expected = joint + (features.mean((2, 3)) * (y @ c.proj.weight.T)).sum(1) / 16**0.5
    torch.testing.assert_close(c(features, s), expected, rtol=1e-12, atol=1e-12)
