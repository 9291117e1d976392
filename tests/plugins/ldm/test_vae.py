"""t2i_ldm.vae: AutoencoderKL parity with diffusers (test-only reference) and LdmDecoder."""

from __future__ import annotations

import pytest
import torch

from t2i.contracts import Decoder
from t2i.payloads import Image, Latent
from t2i_ldm.config import SD_VAE, TINY_VAE
from t2i_ldm.diffusers_format import load_diffusers_vae
from t2i_ldm.vae import AutoencoderKL, LdmDecoder

diffusers = pytest.importorskip("diffusers")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.fixture(scope="module", params=[(32, 64), (16, 32, 32)], ids=["2lvl", "3lvl"])
def pair(request, tmp_path_factory):
    torch.manual_seed(len(request.param))
    ref = diffusers.AutoencoderKL(
        block_out_channels=request.param,
        down_block_types=("DownEncoderBlock2D",) * len(request.param),
        up_block_types=("UpDecoderBlock2D",) * len(request.param),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
    ).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.15)
    folder = tmp_path_factory.mktemp("vae")
    ref.save_pretrained(folder)
    return ref, load_diffusers_vae(folder)


def test_encode_matches_diffusers(pair):
    ref, ours = pair
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = ref.encode(x).latent_dist
        got = ours.encode(x)
    assert _rel(got.mean, expected.mean) < 1e-4
    assert _rel(got.std, expected.std) < 1e-4
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert _rel(got.sample(g1), expected.sample(g2)) < 1e-4


def test_decode_matches_diffusers(pair):
    ref, ours = pair
    f = ours.config.factor
    z = torch.randn(2, 4, 16 // f, 16 // f)
    with torch.no_grad():
        expected = ref.decode(z).sample
        got = ours.decode(z)
    assert got.shape == (2, 3, 16, 16)
    assert expected.std() > 0.1
    assert _rel(got, expected) < 1e-4


def test_ldm_decoder_applies_scaling_and_range():
    torch.manual_seed(0)
    vae = AutoencoderKL(TINY_VAE).eval()
    dec = LdmDecoder(vae)
    assert isinstance(dec, Decoder)
    assert (dec.factor, dec.channels, dec.scaling_factor) == (2, 4, 0.18215)
    z = torch.randn(1, 4, 8, 8)
    img = dec.decode(Latent(z * 0.18215))
    with torch.no_grad():
        raw = vae.decode(z)
    torch.testing.assert_close(img.pixels, ((raw + 1) / 2).clamp(0, 1))
    assert img.pixels.min() >= 0 and img.pixels.max() <= 1

    pixels = torch.rand(1, 3, 16, 16)
    lat = dec.encode(Image(pixels))
    with torch.no_grad():
        mean = vae.encode(pixels * 2 - 1).mean
    torch.testing.assert_close(lat.samples, mean * 0.18215)
    g = torch.Generator().manual_seed(0)
    sampled = dec.encode(Image(pixels), sample=True, generator=g)
    assert not torch.allclose(sampled.samples, lat.samples)


def test_bad_shapes_are_rejected():
    vae = AutoencoderKL(TINY_VAE)
    with pytest.raises(ValueError, match="multiples of 2"):
        vae.encode(torch.rand(1, 3, 15, 16))
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        vae.decode(torch.rand(1, 3, 8, 8))


def test_sd_vae_has_published_size_and_keys():
    with torch.device("meta"):
        vae = AutoencoderKL(SD_VAE)
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    keys = set(vae.state_dict())
    for key in (
        "encoder.down.0.block.0.conv1.weight",
        "encoder.down.3.block.1.norm2.bias",
        "encoder.down.2.downsample.conv.weight",
        "encoder.mid.attn_1.q.weight",
        "decoder.up.3.block.2.conv2.weight",
        "decoder.up.1.block.0.nin_shortcut.weight",
        "decoder.up.1.upsample.conv.weight",
        "quant_conv.weight",
        "post_quant_conv.bias",
    ):
        assert key in keys, key
    assert "decoder.up.0.upsample.conv.weight" not in keys
