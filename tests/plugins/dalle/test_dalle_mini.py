"""DALL-E Mini against min-dalle on random weights in a tiny config (fp32)."""

import json

import pytest
import torch
from t2i_dalle.mini.bart import START_TOKEN, BartDecoder, BartEncoder
from t2i_dalle.mini.checkpoint import bart_config
from t2i_dalle.mini.tokenizer import BPETokenizer, read_merges

# min_dalle/__init__ imports min_dalle.min_dalle, which turns autograd off process-wide and
# sets torch's thread count: both are put back right after the import (collection time)
# (also when the import fails half-way, so a broken min-dalle cannot leave grad off)
_GRAD, _THREADS = torch.is_grad_enabled(), torch.get_num_threads()
try:
    min_dalle = pytest.importorskip(
        "min_dalle", reason="the test-only reference min-dalle is missing"
    )
finally:
    torch.set_grad_enabled(_GRAD)
    torch.set_num_threads(_THREADS)
from min_dalle.models import DalleBartDecoder, DalleBartEncoder, VQGanDetokenizer  # noqa: E402
from min_dalle.text_tokenizer import TextTokenizer  # noqa: E402

WORDS = ("a", "red", "circle", "blue", "square", "on", "the", "left", "avocado", "chair")
TINY = {"layer_count": 2, "embed_count": 128, "attention_head_count": 2, "glu_embed_count": 96}


def _vocab_and_merges():
    """A BPE vocabulary over WORDS: every character, and merges building each word."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    merges = []
    for w in WORDS:
        parts = ["Ġ", *w]
        for p in parts:
            vocab.setdefault(p, len(vocab))
        while len(parts) > 1:
            merges.append((parts[0], parts[1]))
            parts = [parts[0] + parts[1], *parts[2:]]
            vocab.setdefault(parts[0], len(vocab))
    return vocab, list(dict.fromkeys(merges))


@pytest.fixture(scope="module")
def mini_folder(tmp_path_factory):
    """min-dalle's modules (random weights) and their files in min-dalle's layout."""
    vocab, merges = _vocab_and_merges()
    torch.manual_seed(0)
    enc = DalleBartEncoder(text_vocab_count=len(vocab), text_token_count=64, device="cpu", **TINY)
    dec = DalleBartDecoder(image_vocab_count=2**14, device="cpu", **TINY)
    det = VQGanDetokenizer()
    for module in (enc, dec):  # non-trivial LayerNorm affine parameters
        for name, p in module.named_parameters():
            if "norm" in name or name.endswith("ln0.weight") or "_ln" in name:
                torch.nn.init.normal_(p, 1.0 if name.endswith("weight") else 0.0, 0.2)
    folder = tmp_path_factory.mktemp("mini")
    torch.save(enc.state_dict(), folder / "encoder.pt")
    torch.save(dec.state_dict(), folder / "decoder.pt")
    torch.save(det.state_dict(), folder / "detoker.pt")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder, enc.eval(), dec.eval(), det.eval(), vocab


def _ours(folder):
    enc_state = torch.load(folder / "encoder.pt", weights_only=True)
    dec_state = torch.load(folder / "decoder.pt", weights_only=True)
    config = bart_config(enc_state, dec_state, None)
    enc, dec = BartEncoder(config), BartDecoder(config)
    enc.load_state_dict(enc_state)
    dec.load_state_dict(dec_state)
    return enc.eval(), dec.eval()


def test_tokenizer_matches_min_dalle(mini_folder):
    folder, *_, vocab = mini_folder
    ours = BPETokenizer.from_folder(folder)
    ref = TextTokenizer(vocab, (folder / "merges.txt").read_text().split("\n")[1:-1])
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        words = [WORDS[i] for i in torch.randint(0, len(WORDS), (6,), generator=g)]
        text = " ".join(words).upper() + " zebra"  # upper case, and an unknown word
        assert ours.encode(text) == ref.tokenize(text)
    assert len(read_merges(folder / "merges.txt")) == len(ours.rank)


def test_encoder_states_match(mini_folder, rel_err):
    folder, ref_enc, *_ = mini_folder
    enc, _ = _ours(folder)
    tok = BPETokenizer.from_folder(folder)
    ids = tok.ids(["", "a red circle on the left"])  # min-dalle's [uncond; cond] rows
    with torch.no_grad():
        assert rel_err(enc(ids), ref_enc(ids)) < 1e-4


def test_decoder_logits_match_for_a_fixed_prefix(mini_folder, rel_err):
    folder, ref_enc, ref_dec, *_ = mini_folder
    _, dec = _ours(folder)
    ids = BPETokenizer.from_folder(folder).ids(["", "a blue square"])
    prefix = torch.randint(0, 2**14, (12,))
    prefix[0] = START_TOKEN
    with torch.no_grad():
        states = ref_enc(ids)
        mask = ids.ne(1)[:, None, None, :]
        attention_state = torch.zeros(2, 4, 256, 128)
        cache, mine, theirs = None, [], []
        for i in range(len(prefix)):
            logits, attention_state = ref_dec(
                attention_mask=mask, encoder_state=states, attention_state=attention_state,
                prev_tokens=prefix[None, [i]], token_index=torch.tensor([i]),
            )  # fmt: skip
            theirs.append(logits[:, -1])
            ours, cache = dec(prefix[[i]].repeat(2, 1), states, ids.ne(1), cache)
            mine.append(ours[:, -1])
            assert cache.length == i + 1  # one position per token
    assert rel_err(torch.stack(mine), torch.stack(theirs)) < 1e-4


@pytest.mark.slow
def test_detokenized_image_matches(mini_folder, rel_err):
    from t2i_dalle.mini.vqgan import VQGANDetokenizer

    folder, *_, det, _ = mini_folder
    ours = VQGANDetokenizer()
    ours.load_state_dict(torch.load(folder / "detoker.pt", weights_only=True))
    grid = torch.randint(0, 2**14, (1, 256))
    with torch.no_grad():
        want = det(False, grid)  # (256, 256, 3) in [0, 255]
        got = ours.eval()(grid.view(1, 16, 16))[0].permute(1, 2, 0) * 255
    assert rel_err(got, want) < 1e-4


@pytest.mark.slow
def test_greedy_generation_gives_min_dalles_image(mini_folder):
    """top_k=1 with supercondition 16: the engine's image equals MinDalle's for that seed."""
    from min_dalle.min_dalle import MinDalle  # imported (grad mode restored) at the top
    from t2i_dalle import plugin

    from t2i import Engine
    from t2i.testing import make_manager

    folder, ref_enc, ref_dec, det, vocab = mini_folder
    ref = MinDalle.__new__(MinDalle)
    ref.__dict__.update(
        device="cpu", dtype=torch.float32, is_reusable=True, is_verbose=False, text_token_count=64,
        layer_count=2, embed_count=128, encoder=ref_enc, decoder=ref_dec, detokenizer=det,
        tokenizer=TextTokenizer(vocab, (folder / "merges.txt").read_text().split("\n")[1:-1]),
    )  # fmt: skip
    prompt = "a red chair on the left"
    with torch.no_grad():
        raw = ref.generate_raw_image_stream(prompt, seed=5, grid_size=1, top_k=1,
                                            supercondition_factor=16)  # fmt: skip
        want = next(iter(raw)).round()
        raw.close()
    pipe = Engine.build("dalle-mini", plugins=make_manager(plugin), checkpoint=folder)
    image = pipe(prompt, seed=5, top_k=1, cfg_scale=16).images[0]
    got = torch.tensor(list(image.getdata()), dtype=torch.float32).view(256, 256, 3)
    assert (got - want).abs().max() <= 1  # one 8-bit level: rounding vs min-dalle's float


def test_a_folder_without_min_dalles_files_is_refused(tmp_path):
    from t2i_dalle import plugin

    from t2i import Engine
    from t2i.checkpoints import CheckpointError
    from t2i.testing import make_manager

    (tmp_path / "encoder.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"missing decoder\.pt, detoker\.pt, vocab\.json"):
        Engine.build("dalle-mini", plugins=make_manager(plugin), checkpoint=tmp_path)
