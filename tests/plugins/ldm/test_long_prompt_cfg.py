"""Long prompts with CFG as A1111 does them (issue 20, item 1).

When the prompt and the negative prompt have different chunk counts, A1111
(``modules/sd_samplers_cfg_denoiser.py``, ``pad_cond_uncond``) lengthens the shorter one with
whole copies of the empty prompt's conditioning (``cond_stage_model([""])``: start, end, then
padding, 77 tokens, encoded like any prompt), never with zeros. The reference here is built
by hand from that rule: the empty chunk's ids written out, encoded by transformers' CLIP
text model, appended, and the two halves run through the UNet apart.
"""

from __future__ import annotations

import pytest
import torch

from t2i import Engine
from t2i.payloads import Conditioning
from t2i.testing import make_manager
from t2i_ldm import plugin

pytest.importorskip("diffusers")

LONG = ", ".join(["a red cube on top of a blue sphere"] * 20)  # about 200 tokens: 3 chunks
SHORT = "a small dog"


def _parts(folder, prompt: str, negative: str, scale: float):
    pipe = Engine.build("ldm", plugins=make_manager(plugin), checkpoint=str(folder))
    params = {
        "tokenize_positive": {"text": prompt},
        "tokenize_negative": {"text": negative},
        "guide": {"cfg_scale": scale},
    }
    out = pipe.executor.run(
        pipe.graph, params=params, outputs=["guide", "tokenizer", "text_encoder", "denoiser"]
    )
    return (
        out["guide"]["guided"],
        out["tokenizer"]["tokenizer"],
        out["text_encoder"]["text_encoder"],
        out["denoiser"]["model"],
    )


def _empty_chunk_by_hand(reference_text_model, tokenizer) -> torch.Tensor:
    """A1111's empty prompt for SD1: ``[start] + [end] * 76``, CLIP's last hidden state."""
    ids = torch.tensor([[tokenizer.bos_id] + [tokenizer.eos_id] * 76])
    with torch.no_grad():
        return reference_text_model(input_ids=ids).last_hidden_state  # (1, 77, 32)


@pytest.mark.parametrize("longer", ["prompt", "negative"])
def test_shorter_side_padded_with_empty_prompt_chunks(tiny_sd, longer):
    reference, folder = tiny_sd
    prompt, negative = (LONG, SHORT) if longer == "prompt" else (SHORT, LONG)
    scale = 5.0
    guided_model, tokenizer, encoder, denoiser = _parts(folder, prompt, negative, scale)
    guided, positive = guided_model.bind(1)

    cond = encoder(tokenizer([prompt])).embeds
    uncond = encoder(tokenizer([negative])).embeds
    assert cond.shape[1] != uncond.shape[1] and max(cond.shape[1], uncond.shape[1]) >= 3 * 77
    empty = _empty_chunk_by_hand(reference.text_encoder, tokenizer)
    length = max(cond.shape[1], uncond.shape[1])

    def pad(states, filler):
        return torch.cat([states, filler.repeat(1, (length - states.shape[1]) // 77, 1)], 1)

    torch.manual_seed(3)
    sigma = torch.tensor([4.0])
    x = torch.randn(1, 4, 8, 8) * (sigma**2 + 1).sqrt()
    with torch.no_grad():
        got = guided(x, sigma, positive)

        def cfg(c, u):
            x0_c = denoiser(x, sigma, Conditioning(c))
            x0_u = denoiser(x, sigma, Conditioning(u))
            return x0_u + scale * (x0_c - x0_u)

        expected = cfg(pad(cond, empty), pad(uncond, empty))
        zero_padded = cfg(pad(cond, torch.zeros_like(empty)), pad(uncond, torch.zeros_like(empty)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the rule matters on this model: zero padding is measurably another result
    assert (zero_padded - expected).abs().max() > 100 * 1e-5


def test_pad_chunk_is_the_empty_prompt_encoding(tiny_sd):
    reference, folder = tiny_sd
    _, tokenizer, encoder, _ = _parts(folder, LONG, SHORT, 5.0)
    tokens = tokenizer([SHORT])
    assert tokens.pad_chunk.tolist() == tokenizer([""]).ids.tolist()
    cond = encoder(tokens)
    torch.testing.assert_close(cond.pad_chunk, encoder(tokenizer([""])).embeds)
    torch.testing.assert_close(
        cond.pad_chunk,
        _empty_chunk_by_hand(reference.text_encoder, tokenizer),
        rtol=1e-5,
        atol=1e-5,
    )


def test_conditioning_cat_pads_with_pad_chunk_or_zeros_and_mask():
    filler = torch.full((1, 4, 2), 7.0)
    short = Conditioning(torch.ones(1, 4, 2), pad_chunk=filler)
    long = Conditioning(torch.ones(1, 12, 2), pad_chunk=filler)
    both = Conditioning.cat([long, short])
    assert both.mask is None  # padded with real states: nothing to mask
    assert both.embeds[1, 4:].eq(7.0).all() and both.embeds[1, :4].eq(1.0).all()
    odd = Conditioning(torch.ones(1, 6, 2), pad_chunk=filler)  # gap of 6: not whole chunks
    mixed = Conditioning.cat([long, odd])
    assert mixed.embeds[1, 6:].eq(0).all() and not mixed.mask[1, 6:].any()
    bare = Conditioning.cat([long, Conditioning(torch.ones(1, 4, 2))])  # no pad chunk: zeros
    assert bare.embeds[1, 4:].eq(0).all() and bare.mask[1, :4].all()


def test_a_bad_pad_chunk_is_refused(tiny_sd):
    from t2i.payloads import Tokens

    _, folder = tiny_sd
    _, tokenizer, encoder, _ = _parts(folder, SHORT, SHORT, 5.0)
    tokens = tokenizer([SHORT])
    bad = Tokens(tokens.ids, tokens.weights, tokens.mask, pad_chunk=tokens.ids[:, :10])
    with pytest.raises(ValueError, match="pad_chunk must be"):
        encoder(bad)
