"""t2i_ldm.tokenizer against transformers' CLIPTokenizer on a small BPE vocabulary built here."""

from __future__ import annotations

import gzip
import itertools
import json
import random
from collections import Counter

import pytest
import torch
from transformers import CLIPTokenizer

from t2i.contracts import Tokenizer
from t2i_ldm.tokenizer import ClipTokenizer, openai_clip_vocab, read_bpe_merges

WORDS = (
    "a red blue green cube sphere cone on top of left right the small large big photo "
    "painting of cat dog house hill sun sky tree in hat with and under"
).split()


def train_bpe(words: list[str], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE (Sennrich et al., 2016) on ASCII words with CLIP's ``</w>`` end marker."""
    corpus = Counter((*tuple(w[:-1]), w[-1] + "</w>") for w in words)
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for word, count in corpus.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged: Counter = Counter()
        for word, count in corpus.items():
            out, i = [], 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        corpus = merged
    return merges


@pytest.fixture(scope="module")
def merges() -> list[tuple[str, str]]:
    return train_bpe(WORDS * 3, 120)


@pytest.fixture(scope="module")
def vocab(merges) -> dict[str, int]:
    """OpenAI's vocabulary recipe written out independently of the module under test."""
    byte_values = list(range(ord("!"), ord("~") + 1))
    byte_values += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in byte_values]
    extra = 0
    for b in range(256):
        if b not in byte_values:
            chars.append(chr(256 + extra))
            extra += 1
    tokens = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


@pytest.fixture(scope="module")
def reference(vocab, merges) -> CLIPTokenizer:
    return CLIPTokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="module")
def tokenizer(vocab, merges) -> ClipTokenizer:
    return ClipTokenizer.from_vocab_and_merges(vocab, merges)


def random_prompt(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice([*WORDS, "zebra", "xyzzy", "!", "42"]) for _ in range(n_words))


def test_implements_protocol(tokenizer):
    assert isinstance(tokenizer, Tokenizer)


def test_vocab_recipe_matches_openai(vocab, merges):
    assert openai_clip_vocab(merges) == vocab
    assert vocab["!"] == 0 and vocab["<|endoftext|>"] == len(vocab) - 1


def test_plain_prompts_match_transformers_sd1(tokenizer, reference):
    rng = random.Random()
    prompts = [random_prompt(rng, rng.randint(1, 30)) for _ in range(6)] + ["A Photo, of a CAT!"]
    got = tokenizer(prompts)
    ref = reference(prompts, padding="max_length", max_length=77, return_tensors="pt")
    assert got.ids.shape == (len(prompts), 77)
    assert torch.equal(got.ids, ref["input_ids"])
    assert torch.equal(got.mask, ref["attention_mask"].bool())
    assert torch.all(got.weights == 1.0)


def test_sd2_pads_with_zero_like_transformers(vocab, merges):
    sd2 = ClipTokenizer.from_vocab_and_merges(vocab, merges, pad_id=0)
    ref = CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!")
    prompts = ["a red cube", "the dog on a hill with a hat"]
    expected = ref(prompts, padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
    assert torch.equal(sd2(prompts).ids, expected)
    assert expected[0, 5:].eq(0).all()


def test_bpe_file_loader_equals_vocab_json_loader(tmp_path, vocab, merges, tokenizer):
    gz = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    body = "\n".join(f"{a} {b}" for a, b in merges) + "\n" + "extra merge\n"
    gz.write_bytes(gzip.compress(("#version: 0.2\n" + body).encode()))
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges))
    from_gz = ClipTokenizer.from_bpe_file(gz, num_merges=len(merges))
    from_folder = ClipTokenizer.from_folder(folder)
    assert from_gz.backend.get_vocab() == vocab
    rng = random.Random()
    prompts = [random_prompt(rng, 40) for _ in range(3)] + ["(red:1.3) cube BREAK [sky]"]
    for a, b in [(from_gz(prompts), from_folder(prompts)), (from_gz(prompts), tokenizer(prompts))]:
        assert torch.equal(a.ids, b.ids)
        assert torch.equal(a.weights, b.weights)


def test_bpe_file_rejects_bad_lines(tmp_path):
    path = tmp_path / "merges.txt"
    path.write_text("#version\na b\nnot-a-pair\n")
    with pytest.raises(ValueError, match=":3: a merge is two"):
        read_bpe_merges(path)
    with pytest.raises(FileNotFoundError):
        read_bpe_merges(tmp_path / "missing.txt.gz")


def test_folder_without_files_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vocab\.json"):
        ClipTokenizer.from_folder(tmp_path)


def test_emphasis_weights_per_token(tokenizer, reference):
    got = tokenizer(["a (red:1.5) cube on [the] ((hill))"])
    pieces = [("a ", 1.0), ("red", 1.5), (" cube on ", 1.0), ("the", 1 / 1.1), ("hill", 1.21)]
    ids, weights = [], []
    for text, weight in pieces:  # the web UI tokenizes each weighted piece on its own
        piece_ids = reference(text, add_special_tokens=False)["input_ids"]
        ids += piece_ids
        weights += [weight] * len(piece_ids)
    n = len(ids)
    assert got.ids[0, 1 : n + 1].tolist() == ids
    assert got.weights[0, 1 : n + 1].tolist() == pytest.approx(weights, rel=1e-6)
    assert got.weights[0, 0] == 1.0 and torch.all(got.weights[0, n + 1 :] == 1.0)


def test_parse_emphasis_off_keeps_brackets_as_text(vocab, merges, reference):
    plain = ClipTokenizer.from_vocab_and_merges(vocab, merges, parse_emphasis=False)
    text = "a (red:1.5) cube"
    got = plain([text])
    expected = reference(text, padding="max_length", max_length=77)["input_ids"]
    assert got.ids[0].tolist() == expected
    assert torch.all(got.weights == 1.0)


def test_break_ends_a_chunk(tokenizer, reference):
    got = tokenizer(["a red cube BREAK a blue sphere"])
    assert got.ids.shape == (1, 154)
    first = reference("a red cube", padding="max_length", max_length=77)["input_ids"]
    second = reference("a blue sphere", padding="max_length", max_length=77)["input_ids"]
    assert got.ids[0].tolist() == first + second


def test_long_prompt_splits_into_75_token_chunks(tokenizer, reference):
    rng = random.Random()
    text = " ".join(rng.choice(WORDS) for _ in range(1000))
    flat = reference(text, add_special_tokens=False)["input_ids"]
    got = tokenizer([text])
    n_chunks = -(-len(flat) // 75)
    assert got.ids.shape == (1, 77 * n_chunks)
    chunks = got.ids.view(n_chunks, 77)
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    assert torch.all(chunks[:, 0] == bos)
    assert torch.all(chunks[:-1, 76] == eos)
    content = torch.cat([c[1 : 1 + min(75, len(flat) - 75 * i)] for i, c in enumerate(chunks)])
    assert content.tolist() == flat


def test_thousand_token_prompt_gives_14_chunks(tokenizer):
    text = " ".join(["cube"] * 1000)  # "cube" is one token in this vocabulary
    assert tokenizer.count_tokens(text) == 1000
    got = tokenizer(text)
    assert got.ids.shape == (1, 14 * 77)
    assert int(got.mask.sum()) == 1000 + 2 * 14


def test_batch_is_padded_to_the_same_chunk_count(tokenizer, reference):
    got = tokenizer(["cube", " ".join(["cube"] * 100)])
    assert got.ids.shape == (2, 154)
    empty = reference("", padding="max_length", max_length=77)["input_ids"]
    assert got.ids[0, 77:].tolist() == empty
    assert got.mask[0, 77:].sum() == 2


def test_empty_prompt(tokenizer, vocab, merges):
    got = tokenizer([""])
    eos = tokenizer.eos_id
    assert got.ids[0].tolist() == [tokenizer.bos_id] + [eos] * 76
    assert got.mask[0].tolist() == [True, True] + [False] * 75
    sd2 = ClipTokenizer.from_vocab_and_merges(vocab, merges, pad_id=0)
    assert sd2("").ids[0].tolist() == [tokenizer.bos_id, eos] + [0] * 75


def test_unbalanced_brackets_work(tokenizer):
    got = tokenizer(["((a red cube", "a red] cube)", "[[[("])
    assert got.ids.shape == (3, 77)
    assert got.weights[0, 1].item() == pytest.approx(1.21)
    assert torch.all(got.weights[1] == 1.0)


def test_comma_backtrack_moves_text_after_a_late_comma(vocab, merges):
    text = " ".join(["cube"] * 70) + " , " + " ".join(["sky"] * 10)
    with_backtrack = ClipTokenizer.from_vocab_and_merges(vocab, merges)
    without = ClipTokenizer.from_vocab_and_merges(vocab, merges, comma_padding_backtrack=0)
    comma = vocab[",</w>"]
    a, b = with_backtrack(text), without(text)
    assert a.ids.shape == b.ids.shape == (1, 154)
    assert a.ids[0, 71].item() == comma and a.ids[0, 72].item() == with_backtrack.eos_id
    assert a.mask[0, :77].sum() == 73 and a.mask[0, 77:].sum() == 12
    assert b.mask[0, :77].sum() == 77 and b.mask[0, 77:].sum() == 8
    assert sorted(a.ids[a.mask].tolist()) == sorted(b.ids[b.mask].tolist())


def test_bad_input_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="at least one prompt"):
        tokenizer([])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tokenizer(["ok", 3])
    with pytest.raises(ValueError, match="pad_id"):
        ClipTokenizer(tokenizer.backend, pad_id=10**6)


def test_released_clip_vocabulary_when_installed():
    """With the real merges list (open_clip_torch, or $T2I_CLIP_BPE), ids are CLIP's."""
    from t2i_ldm.tokenizer import find_bpe_file

    if find_bpe_file() is None:
        pytest.skip("bpe_simple_vocab_16e6.txt.gz not on this machine")
    tok = ClipTokenizer.from_installed_bpe()
    assert tok.vocab_size == 49408 and (tok.bos_id, tok.eos_id) == (49406, 49407)
    assert (
        tok("a photo of a cat").ids[0, :8].tolist()
        == [49406, 320, 1125, 539, 320, 2368] + [49407] * 2
    )
    sd2 = ClipTokenizer.from_installed_bpe(pad_id=0)
    assert sd2("a cat").ids[0, :5].tolist() == [49406, 320, 2368, 49407, 0]


def test_installed_bpe_missing_is_a_clear_error(monkeypatch):
    import t2i_ldm.tokenizer as module

    monkeypatch.setattr(module, "find_bpe_file", lambda: None)
    with pytest.raises(FileNotFoundError, match="open_clip_torch"):
        ClipTokenizer.from_installed_bpe()


def test_shipped_clip_vocabulary_gives_the_released_ids(monkeypatch):
    """The merges list shipped in t2i_ldm/data is OpenAI's: known ids for a known prompt."""
    from t2i_ldm.tokenizer import ClipTokenizer, find_bpe_file

    monkeypatch.delenv("T2I_CLIP_BPE", raising=False)
    path = find_bpe_file()
    assert path is not None and path.name == "bpe_simple_vocab_16e6.txt.gz"
    tok = ClipTokenizer.from_bpe_file(path)
    assert tok.vocab_size == 49408
    ids = tok(["a photo of a cat"]).ids[0, :7].tolist()
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]
