"""``t2i_ldm.clip_bpe`` builds the same ``tokenizers`` pipeline as transformers' CLIPTokenizer."""

from __future__ import annotations

import json

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode as transformers_table

from t2i_ldm.clip_bpe import ClipBpe, bytes_to_unicode
from t2i_ldm.shapes_model import WEIGHTS_DIR, load_tokenizer

PROMPTS = [
    "a large green circle in the center",
    "A  BIG\tred   square,left of a (blue:1.2) TRIANGLE!!",
    "<|endoftext|>a<|startoftext|> cat's 42 dogs",
    "ÿé naïve café 😀 zebra xyzzy",
    "",
]


def shipped():
    folder = WEIGHTS_DIR / "tokenizer"
    vocab = json.loads((folder / "vocab.json").read_text())
    lines = (folder / "merges.txt").read_text().splitlines()
    return vocab, [tuple(x.split()) for x in lines if x and not x.startswith("#")]


def test_the_pipeline_is_transformers_clip_tokenizer():
    vocab, merges = shipped()
    ours = ClipBpe(vocab, merges)
    reference = CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m) for m in merges])
    assert json.loads(ours.backend_tokenizer.to_str()) == json.loads(
        reference.backend_tokenizer.to_str()
    )
    assert ours.get_vocab() == reference.get_vocab()
    assert ours.pad_token_id == reference.pad_token_id
    for special in (False, True):
        got = ours.backend_tokenizer.encode_batch(PROMPTS, add_special_tokens=special)
        want = reference.backend_tokenizer.encode_batch(PROMPTS, add_special_tokens=special)
        assert [e.ids for e in got] == [e.ids for e in want]


def test_byte_table_is_gpt2s_in_its_order():
    assert list(bytes_to_unicode().items()) == list(transformers_table().items())


def test_the_shapes_tokenizer_gives_the_ids_it_gave_through_transformers():
    vocab, merges = shipped()
    tokenizer = load_tokenizer(WEIGHTS_DIR / "tokenizer")
    reference = CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m) for m in merges])
    got = tokenizer.encode_text(PROMPTS)
    want = [
        e.ids for e in reference.backend_tokenizer.encode_batch(PROMPTS, add_special_tokens=False)
    ]
    assert got == want
