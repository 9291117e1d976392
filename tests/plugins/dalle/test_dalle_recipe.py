"""The dalle-shapes recipe on a random-weight folder: seeds, guidance, priming, bad input."""

import pytest
import torch
from t2i_dalle import plugin

from t2i import Engine
from t2i.checkpoints import CheckpointError
from t2i.engine import EngineError
from t2i.request import RequestError
from t2i.testing import make_manager

MANAGER = make_manager(plugin)


def test_discovery_imports_no_torch():
    from t2i.testing import heavy_imports_of_discovery

    check = (
        "r = m.records['dalle']; assert r.status == 'loaded', r.error; "
        "assert 'dalle-shapes' in m.registry.names('recipe'); "
        "assert 'dalle' in m.registry.names('trainer')"
    )
    assert heavy_imports_of_discovery("dalle", check=check)["torch"] is False


def test_generates_seeded_batches_with_supercondition(dalle_folder):
    pipe = Engine.build("dalle-shapes", plugins=MANAGER, checkpoint=dalle_folder)
    a = pipe("a small blue triangle at the top", seed=3, batch_size=2)
    b = pipe("a small blue triangle at the top", seed=4)
    c = pipe("a small blue triangle at the top", seed=4, cfg_scale=1.0)
    assert len(a.images) == 2 and a.images[0].size == (64, 64)
    assert list(a.images[1].getdata()) == list(b.images[0].getdata())  # image i: seed + i
    assert list(b.images[0].getdata()) != list(c.images[0].getdata())  # guidance changes it


def test_sampling_settings_as_build_defaults_and_in_the_infotext(dalle_folder):
    """top_k / temperature (fields only this recipe binds) are build defaults like
    cfg_scale, the same as per call, and the infotext records them."""
    seed = int(torch.randint(0, 2**31, (1,)))
    built = Engine.build("dalle-shapes", plugins=MANAGER, checkpoint=dalle_folder, top_k=4)
    plain = Engine.build("dalle-shapes", plugins=MANAGER, checkpoint=dalle_folder)
    a = built("a red circle", seed=seed, temperature=0.7)
    b = plain("a red circle", seed=seed, top_k=4, temperature=0.7)
    assert list(a.images[0].getdata()) == list(b.images[0].getdata())
    info = a.infotexts[0]
    assert "Sampler: Top-k" in info and "Top-k: 4" in info and "Temperature: 0.7" in info
    as_int = plain("a red circle", seed=seed, temperature=1).infotexts[0]  # a web form's 1
    assert as_int == plain("a red circle", seed=seed).infotexts[0] and "Temperature: 1.0" in as_int
    with pytest.raises(EngineError, match=r"unknown override 'top_kk'.*top_k"):
        Engine.build("dalle-shapes", plugins=MANAGER, checkpoint=dalle_folder, top_kk=4)


def test_priming_forces_the_top_rows_even_under_supercondition(dalle_folder):
    from t2i_dalle.components import PrimedPredictor
    from t2i_dalle.recipes import create_predictor, create_text_encoder, create_tokenizer

    from t2i.autoregressive.guidance import LogitGuidance
    from t2i.autoregressive.sampling import TokenSampler
    from t2i.contracts import TokenJob

    tok, enc = (
        create_tokenizer(checkpoint=dalle_folder),
        create_text_encoder(checkpoint=dalle_folder),
    )
    cond, uncond = enc(tok(["a red circle"] * 2)), enc(tok([""] * 2))
    prime = torch.randint(0, 16, (2, 5 * 16))
    model = PrimedPredictor(create_predictor(checkpoint=dalle_folder), prime)
    guided = LogitGuidance().wrap(model, uncond=uncond, scale=3.0)
    with torch.no_grad():
        out = TokenSampler(top_k=4, temperature=1.3).sample(TokenJob(guided, cond, 256, (1, 2)))
    assert torch.equal(out[:, :80], prime)
    assert out.shape == (2, 256)


def test_priming_from_an_init_image_runs_end_to_end(dalle_folder):
    from PIL import Image

    pipe = Engine.build("dalle-shapes", plugins=MANAGER, checkpoint=dalle_folder)
    pil = Image.fromarray((torch.rand(64, 64, 3).numpy() * 255).astype("uint8"))
    out = pipe("a red circle", init_image=pil, prime_rows=5, seed=1)
    assert out.images[0].size == (64, 64)
    with pytest.raises(Exception, match=r"rows=16 keeps the whole 16-row grid"):
        pipe("a red circle", init_image=pil, prime_rows=16, seed=1)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"width": 128, "height": 128}, r"width.*choose one of \[64\]"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"top_k": 0}, "top_k must be >= 1"),
        ({"top_k": -3}, "top_k must be >= 1"),
    ],
)
def test_bad_sampling_input_is_refused_before_model_work(dalle_folder, fields, match):
    pipe = Engine.build("dalle-shapes", plugins=MANAGER, checkpoint=dalle_folder)
    with pytest.raises(RequestError, match=match):
        pipe.make_request("a red circle", **fields)


def test_a_prompt_longer_than_the_text_context_is_an_error(dalle_folder):
    pipe = Engine.build("dalle-shapes", plugins=MANAGER, checkpoint=dalle_folder)
    with pytest.raises(Exception, match=r"30 words; this model reads at most 22"):
        pipe("red " * 30)


def test_a_vqgan_file_given_as_the_dvae_is_refused(tmp_path):
    vqgan = tmp_path / "vqgan_imagenet_f16_1024.ckpt"
    vqgan.write_bytes(b"not read")
    with pytest.raises(CheckpointError, match=r"(?s)VQGAN.*dalle-mini"):
        Engine.build("dalle-shapes", plugins=MANAGER, checkpoint=vqgan)
    detoker = tmp_path / "mini"
    detoker.mkdir()
    (detoker / "detoker.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="min-dalle folder"):
        Engine.build("dalle-shapes", plugins=MANAGER, checkpoint=detoker)


def test_a_token_grid_not_matching_the_dvae_is_refused(dalle_folder):
    from t2i_dalle.recipes import create_decoder

    from t2i.payloads import Latent

    dec = create_decoder(checkpoint=dalle_folder)
    with pytest.raises(ValueError, match=r"8x8 token grid does not match this model's 16x16"):
        dec.decode(Latent(torch.zeros(1, 1, 8, 8)))
    with pytest.raises(ValueError, match=r"tokens must be in \[0, 16\)"):
        dec.decode(Latent(torch.full((1, 1, 16, 16), 99.0)))


def test_text_encoder_and_predictor_share_one_transformer_in_another_dtype(dalle_folder):
    """Both components hold the one transformer; a pipeline in another dtype (or on the GPU)
    converts it once for both, not once each (it was counted, and held, twice)."""
    same = Engine.build("dalle-shapes", plugins=MANAGER, checkpoint=dalle_folder)
    half = Engine.build(
        "dalle-shapes", plugins=MANAGER, checkpoint=dalle_folder, dtype=torch.bfloat16
    )
    assert half.parameter_count() == same.parameter_count()
    image = half("a small blue triangle at the top", seed=5).images[0]
    assert image.size == (64, 64)
