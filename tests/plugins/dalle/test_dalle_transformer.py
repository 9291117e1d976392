"""The DALL-E transformer: KV-cached steps (growing and static cache) equal teacher forcing;
masks; the loss weighting; the static cache samples eager's tokens, compiled too."""

import pytest
import torch
from t2i_dalle.transformer import DalleTransformer, TransformerConfig, attention_mask


def tiny(**kw) -> DalleTransformer:
    config = TransformerConfig(
        text_vocab=11, text_len=5, image_vocab=13, grid=4, width=32, depth=4, heads=2, **kw
    )
    torch.manual_seed(0)
    return DalleTransformer(config).eval()


@pytest.mark.parametrize("attn", [("full",), ("full", "row", "column", "conv")])
def test_cached_steps_equal_teacher_forcing(attn, rel_err):
    model = tiny(attn_types=attn, conv_kernel=3)
    text = torch.randint(0, 11, (2, 5))
    image = torch.randint(0, 13, (2, 16))
    with torch.no_grad():
        _, want = model(text, image)
        stream = torch.full((2, 1), model.image_bos)
        logits, cache = model.step(stream, model.embed_text(text), None)
        got = [logits]
        for j in range(15):
            logits, cache = model.step(image[:, j : j + 1], None, cache)
            got.append(logits)
            assert cache.length == 5 + j + 2  # one position per new token
        # several tokens at once after a cache (priming) agree too
        _, cache2 = model.step(stream, model.embed_text(text), None)
        primed, _ = model.step(image[:, :6], None, cache2)
    assert rel_err(torch.stack(got, 1), want) < 1e-5
    assert rel_err(primed, want[:, 6]) < 1e-5


def test_sparse_masks_are_causal_and_keep_text_visible():
    config = tiny(attn_types=("row",)).config
    for kind in ("row", "column", "conv"):
        m = attention_mask(config, kind, "cpu")
        assert not m.triu(1).any()  # never a later position
        assert m[5:, :5].all()  # every image position sees all the text
        assert m.diagonal().all()
    row = attention_mask(config, "row", "cpu")
    # image index 6 predicts cell 6 (row 1, col 2): keys hold cells 4, 5 (same row, earlier),
    # the previous token (cell 5) and <img-bos>; not cell 3 (row 0)
    keys = row[5 + 6, 5:].nonzero().flatten().tolist()
    assert keys == [0, 5, 6]


def test_loss_weights_text_and_image_one_to_seven():
    model = tiny()
    text, image = torch.randint(0, 11, (3, 5)), torch.randint(0, 13, (3, 16))
    loss, ce_text, ce_image = model.loss(text, image)
    assert torch.allclose(loss, (ce_text + 7 * ce_image) / 8)
    text_logits, image_logits = model(text, image)
    assert text_logits.shape == (3, 4, 11) and image_logits.shape == (3, 16, 13)


# -- the static KV cache (the compiled token loop) -------------------------------------------


@pytest.mark.parametrize("attn", [("full",), ("full", "row", "column", "conv")])
def test_static_cache_steps_equal_the_growing_cache(attn):
    model = tiny(attn_types=attn, conv_kernel=3)
    text, image = torch.randint(0, 11, (2, 5)), torch.randint(0, 13, (2, 16))
    stream = torch.full((2, 1), model.image_bos)
    with torch.no_grad():
        states = model.embed_text(text)
        want, grow = model.step(stream, states, None)
        got, static = model.step(stream, states, model.new_cache(2))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        for j in range(15):
            want, grow = model.step(image[:, j : j + 1], None, grow)
            got, static = model.step(image[:, j : j + 1], None, static)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            assert static.length == grow.length == 5 + j + 2
        assert static.keys[0].shape == (2, 2, 21, 16)  # preallocated: never grew
        _, primed = model.step(stream, states, model.new_cache(2))  # several tokens at once
        got, _ = model.step(image[:, :6], None, primed)
        _, primed = model.step(stream, states, None)
        want, _ = model.step(image[:, :6], None, primed)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_static_cache_refuses_positions_past_its_length():
    model = tiny()
    states = model.embed_text(torch.randint(0, 11, (1, 5)))
    with torch.no_grad(), pytest.raises(ValueError, match="overflow"):
        model.step(torch.full((1, 3), model.image_bos), states, model.new_cache(1, max_len=7))
    with torch.no_grad(), pytest.raises(ValueError, match="beyond the grid"):
        model.step(torch.zeros(1, 17, dtype=torch.long), states, model.new_cache(1))


def _sample(predictor, seeds, *, guided=False):
    from t2i.autoregressive.guidance import GuidedTokenPredictor
    from t2i.autoregressive.sampling import TokenSampler
    from t2i.contracts import TokenJob
    from t2i.payloads import Conditioning

    model = predictor.transformer
    gen = torch.Generator().manual_seed(5)
    cond = Conditioning(model.embed_text(torch.randint(0, 11, (len(seeds), 5), generator=gen)))
    uncond = Conditioning(model.embed_text(torch.zeros(len(seeds), 5, dtype=torch.long)))
    wrapped = GuidedTokenPredictor(predictor, uncond, 3.0) if guided else predictor
    job = TokenJob(wrapped, cond, model.config.image_len, tuple(seeds))
    with torch.inference_mode():
        return TokenSampler(top_k=8).sample(job)


@pytest.mark.parametrize("guided", [False, True])
def test_static_cache_samples_the_same_tokens_for_the_same_seeds(guided):
    from t2i_dalle.components import DalleTokenPredictor

    model = tiny(attn_types=("full", "row"))
    for seeds in ((1, 2), (3, 4)):
        eager = _sample(DalleTokenPredictor(model), seeds, guided=guided)
        static = _sample(DalleTokenPredictor(model, static_cache=True), seeds, guided=guided)
        assert torch.equal(static, eager), seeds


def test_compiled_predictor_has_one_prefill_and_one_decode_graph():
    """``DalleTokenPredictor.compile_token_loop``: the static cache and the transformer
    compiled; the whole token loop of two generations (two seeds each) is two graphs, with
    eager's tokens."""
    from t2i_dalle.components import DalleTokenPredictor
    from torch._dynamo.utils import counters

    model = tiny(attn_types=("full", "conv"), conv_kernel=3)
    want = [_sample(DalleTokenPredictor(model), s) for s in ((1, 2), (3, 4))]
    torch._dynamo.reset()
    counters.clear()
    fast = DalleTokenPredictor(model)
    names = fast.compile_token_loop(backend="eager")
    assert names == ["transformer.forward", "transformer.prefill", "transformer.decode"]
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            got = [_sample(fast, s) for s in ((1, 2), (3, 4))]
        assert not counters["graph_break"], dict(counters["graph_break"])
        assert counters["stats"]["unique_graphs"] == 2  # prefill, decode: no recompile
    finally:
        torch._dynamo.reset()
    assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.slow  # three generations of 256 tokens
def test_dalle_shapes_with_compile_true_gives_eager_images(dalle_folder, monkeypatch):
    """``Engine.build("dalle-shapes", compile=True)`` (Dynamo's eager backend here): the token
    predictor compiles itself with its static cache
    (``DalleTokenPredictor.compile_token_loop``) beside the dVAE decoder; eager's image, one
    graph per compiled call for two seeds."""
    from t2i_dalle import plugin
    from t2i_dalle.components import DalleTokenPredictor
    from torch._dynamo.utils import counters

    from t2i import Engine
    from t2i.testing import make_manager

    monkeypatch.setenv("T2I_COMPILE_BACKEND", "eager")
    manager = make_manager(plugin)
    prompt = "a small blue triangle at the top"
    plain = Engine.build("dalle-shapes", plugins=manager, checkpoint=dalle_folder)
    want = plain(prompt, seed=1).images[0].tobytes()
    torch._dynamo.reset()
    counters.clear()
    try:
        pipe = Engine.build("dalle-shapes", plugins=manager, checkpoint=dalle_folder, compile=True)
        predictors = []
        pipe.map_components(lambda n, k, c: predictors.append(c) or c)
        assert any(isinstance(c, DalleTokenPredictor) and c.static_cache for c in predictors)
        with torch._dynamo.config.patch(error_on_recompile=True):
            got = [pipe(prompt, seed=s).images[0].tobytes() for s in (1, 2)]
        assert not counters["graph_break"], dict(counters["graph_break"])
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
    assert graphs == 3  # prefill, decode, the dVAE's decode: no recompile for the second seed
    assert got[0] == want
