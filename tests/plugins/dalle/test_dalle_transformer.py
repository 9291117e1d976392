"""The DALL-E transformer: KV-cached steps equal teacher forcing; masks; the loss weighting."""

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
