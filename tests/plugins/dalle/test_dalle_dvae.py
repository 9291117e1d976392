"""The dVAE against OpenAI's ``dall_e`` package on random weights (fp32)."""

import pytest
import torch
from t2i_dalle.dvae import Decoder, DVAEConfig, Encoder, config_from_state, map_pixels

dall_e = pytest.importorskip("dall_e", reason="the test-only reference `dall-e` is not installed")

# OpenAI's validators need n_hid >= 64 and vocab_size >= 512
SMALL = {"n_hid": 64, "n_blk_per_group": 1, "vocab_size": 512}


def test_encoder_logits_match_dall_e(rel_err):
    ref = dall_e.Encoder(**SMALL, requires_grad=False, use_mixed_precision=False).eval()
    torch.nn.init.normal_(ref.blocks.output.conv.b)  # non-zero biases exercise b
    ours = Encoder(DVAEConfig(n_hid=64, n_blk_per_group=1, vocab_size=512)).eval()
    ours.load_state_dict(ref.state_dict())
    x = map_pixels(torch.rand(2, 3, 32, 32))
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert got.shape == (2, 512, 4, 4)
    assert rel_err(got, want) < 1e-4
    pixels = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(ours.tokens(pixels), ref(dall_e.map_pixels(pixels)).argmax(1))
    assert config_from_state(ref.state_dict(), "encoder") == ours.config


def test_decoder_output_matches_dall_e(rel_err):
    ref = dall_e.Decoder(n_init=32, **SMALL, requires_grad=False, use_mixed_precision=False)
    for p in ref.parameters():
        if p.ndim == 1:
            torch.nn.init.normal_(p, std=0.1)
    ours = Decoder(DVAEConfig(n_hid=64, n_blk_per_group=1, vocab_size=512, n_init=32)).eval()
    ours.load_state_dict(ref.state_dict())
    tokens = torch.randint(0, 512, (2, 4, 4))
    one_hot = torch.nn.functional.one_hot(tokens, 512).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        want, got = ref(one_hot), ours(one_hot)
        img_ref = dall_e.unmap_pixels(torch.sigmoid(want[:, :3]))
        img = ours.images(tokens)
    assert got.shape == (2, 6, 32, 32)
    assert rel_err(got, want) < 1e-4
    assert rel_err(img, img_ref) < 1e-4
    assert config_from_state(ref.state_dict(), "decoder") == ours.config


def test_bad_tokens_and_images_are_refused():
    dec = Decoder(DVAEConfig(group_count=2, n_hid=8, n_blk_per_group=1, vocab_size=16, n_init=8))
    with pytest.raises(ValueError, match=r"tokens must be in \[0, 16\)"):
        dec.images(torch.full((1, 2, 2), 16))
    enc = Encoder(DVAEConfig(group_count=2, n_hid=8, n_blk_per_group=1, vocab_size=16))
    with pytest.raises(ValueError, match="multiples of 2"):
        enc(torch.rand(1, 3, 5, 6))
