"""The DALL-E family (t2i_dalle) through the exporter (issue 17): a random-weight
``dalle-shapes`` folder (the tiny layout of tests/plugins/dalle/conftest.py, with every
attention kind: full, row, column, conv) exports its text embedding, the transformer as a
prefill and a one-token decode model with the KV cache as explicit inputs / outputs, and the
dVAE decoder / encoder; the tokenizer is rebuilt from the manifest. Each model matches torch
within 1e-4 (abs and rel, several batch / stream / cache lengths), no graph has a custom op,
the ONNX runtime deploys every component (nothing built in torch, no model code imported)
and draws the same tokens as torch for a seed (random top-k, greedy, super-conditioning,
image priming), so the images are within 2/255."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from t2i.engine import Engine

pytest.importorskip("t2i_dalle", reason="the DALL-E plugin is not installed (-e plugins/t2i_dalle)")

PROMPT = "a small blue triangle at the top"
MODELS = {"text_encoder", "transformer_prefill", "transformer_decode", "dvae_decoder",
          "dvae_encoder"}  # fmt: skip
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def dalle_manager():
    from t2i_dalle import plugin as dalle_plugin

    from t2i.testing import make_manager

    return make_manager(dalle_plugin)


@pytest.fixture(scope="module")
def dalle_folder(tmp_path_factory):
    """A dalle-shapes folder: a random 64 px dVAE (16x16 grid of 16 codes) and a 4-layer
    transformer cycling full / row / column / conv attention, its head scaled so that the
    next-token distributions are peaked (as a trained model's), not near-uniform."""
    import attrs
    from t2i_dalle.checkpoint import TRANSFORMER_FILE, write_spec
    from t2i_dalle.dvae import DVAEConfig
    from t2i_dalle.text import caption_words
    from t2i_dalle.trainables import DVAESchedule, DVAETrainable
    from t2i_dalle.transformer import DalleTransformer, TransformerConfig

    from t2i.checkpoints import save_safetensors

    torch.manual_seed(0)
    dvae = DVAEConfig(group_count=3, n_hid=8, n_blk_per_group=1, n_init=8, vocab_size=16)
    words = caption_words()
    folder = tmp_path_factory.mktemp("dalle") / "model"
    DVAETrainable(dvae, DVAESchedule(), training={"words": words}).save(folder)
    config = TransformerConfig(
        text_vocab=4 + len(words), text_len=24, image_vocab=16, grid=16, width=32, depth=4,
        heads=2, attn_types=("full", "row", "column", "conv"), conv_kernel=3,
    )  # fmt: skip
    net = DalleTransformer(config)
    with torch.no_grad():
        net.head.weight.mul_(40.0)
    save_safetensors(net.state_dict(), folder / TRANSFORMER_FILE)
    write_spec(folder, dvae=attrs.asdict(dvae), transformer=attrs.asdict(config), words=words,
               training={})  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def dalle_export(dalle_folder, dalle_manager, tmp_path_factory):
    from t2i_onnx.exporter import export_recipe

    out = tmp_path_factory.mktemp("dalle-onnx") / "dalle"
    options = {"checkpoint": str(dalle_folder)}
    manifest = export_recipe("dalle-shapes", out, options=options, plugins=dalle_manager)
    return out, manifest


@pytest.fixture(scope="module")
def pipes(dalle_folder, dalle_manager, dalle_export):
    torch_pipe = Engine.build("dalle-shapes", plugins=dalle_manager, checkpoint=dalle_folder)
    onnx_pipe = Engine.build(runtime="onnx", plugins=dalle_manager, onnx_dir=dalle_export[0])
    return torch_pipe, onnx_pipe


def _session(folder, name):
    import onnxruntime as ort

    return ort.InferenceSession(str(folder / name / "model.onnx"),
                                providers=["CPUExecutionProvider"])  # fmt: skip


def _err(got: np.ndarray, expected: torch.Tensor) -> tuple[float, float]:
    """(max abs error, max abs error / max |expected|)."""
    e = expected.double().numpy()
    diff = float(np.abs(got.astype(np.float64) - e).max())
    return diff, diff / max(float(np.abs(e).max()), 1e-30)


@pytest.mark.slow
def test_manifest_models_and_no_custom_ops(dalle_export, dalle_manager, pipes):
    from onnx_checks import custom_domains, example_parity

    out, manifest = dalle_export
    assert set(manifest["models"]) == MODELS
    components = manifest["components"]
    assert set(components) == {"tokenizer", "text_encoder", "denoiser", "decoder"}
    assert all(c["deployment"] for c in components.values())
    assert components["tokenizer"]["models"] == {}  # non-neural: the words in the manifest
    assert manifest["not_exported"] == []
    decode = {v["name"]: v["shape"] for v in manifest["models"]["transformer_decode"]["inputs"]}
    assert decode["past_key_values.3.value"] == ["batch_size", 2, "past_sequence_length", 16]
    assert decode["position"] == []
    assert custom_domains(out) == set()
    errors = example_parity(pipes[0], out, {}, TOLERANCE)
    print("max abs error per model:", errors)
    assert set(errors) == MODELS


@pytest.mark.slow
def test_prefill_and_decode_match_torch_with_the_cache(dalle_export, dalle_folder):
    """The prefill and a run of decode steps (the ONNX cache fed back, as the runtime does)
    vs :meth:`DalleTransformer.step` over batch 1 / 4 / 3 and image streams of 1 / 1 / 7
    tokens, through rows whose row / column / conv masks differ; logits and every present."""
    from t2i_dalle.recipes import create_predictor

    out, _ = dalle_export
    transformer = create_predictor(checkpoint=dalle_folder).transformer
    c = transformer.config
    prefill, decode = _session(out, "transformer_prefill"), _session(out, "transformer_decode")
    gen = torch.Generator().manual_seed(1)
    worst = {"prefill": (0.0, 0.0), "decode": (0.0, 0.0)}
    for batch, length, steps in [(1, 1, 20), (4, 1, 3), (3, 7, 20)]:
        states = torch.randn(batch, c.text_len, c.width, generator=gen)
        stream = torch.randint(0, c.image_vocab, (batch, length), generator=gen)
        stream[:, 0] = transformer.image_bos
        with torch.no_grad():
            logits, cache = transformer.step(stream, states, None)
        got = prefill.run(None, {"text_states": states.numpy(), "stream": stream.numpy()})
        expected = [logits] + [t for kv in zip(cache.keys, cache.values) for t in kv]
        for g, e in zip(got, expected, strict=True):
            worst["prefill"] = max(worst["prefill"], _err(g, e))
        past = got[1:]
        for _ in range(steps):
            token = torch.randint(0, c.image_vocab, (batch, 1), generator=gen)
            feed = {"token": token.numpy(), "position": np.array(cache.length, dtype=np.int64)}
            for i in range(c.depth):
                feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = (
                    past[2 * i], past[2 * i + 1])  # fmt: skip
            with torch.no_grad():
                logits, cache = transformer.step(token, None, cache)
            got = decode.run(None, feed)
            expected = [logits] + [t for kv in zip(cache.keys, cache.values) for t in kv]
            for g, e in zip(got, expected, strict=True):
                assert g.shape == tuple(e.shape)
                worst["decode"] = max(worst["decode"], _err(g, e))
            past = got[1:]
    print("max (abs, rel) error:", worst)
    assert all(a <= TOLERANCE and r <= TOLERANCE for a, r in worst.values()), worst


def _tokens(predictor, cond, uncond, seeds, **sampling):
    from t2i.autoregressive.guidance import LogitGuidance
    from t2i.autoregressive.sampling import TokenSampler
    from t2i.contracts import TokenJob

    model = LogitGuidance().wrap(predictor, uncond=uncond, scale=3.0)
    with torch.no_grad():
        return TokenSampler(**sampling).sample(TokenJob(model, cond, 256, seeds))


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [{"top_k": 4, "temperature": 1.0}, {"top_k": 1}])
def test_the_deployed_predictor_draws_the_torch_tokens(dalle_folder, dalle_export, sampling):
    """Random top-k and greedy sampling under super-conditioning (the [c; u] batch through
    the exported graphs): the same 256 tokens per row as the torch predictor."""
    from t2i_dalle import deployed
    from t2i_dalle.recipes import create_predictor, create_text_encoder, create_tokenizer
    from t2i_onnx.runtime import OrtModule

    out, manifest = dalle_export
    tok, enc = (
        create_tokenizer(checkpoint=dalle_folder),
        create_text_encoder(checkpoint=dalle_folder),
    )
    cond, uncond = enc(tok([PROMPT, "a red circle"])), enc(tok(["", ""]))
    expected = _tokens(create_predictor(checkpoint=dalle_folder), cond, uncond, (5, 6), **sampling)
    options = manifest["components"]["denoiser"]["deployment"]["options"]
    modules = {
        n: OrtModule(_session(out, n)) for n in ("transformer_prefill", "transformer_decode")
    }
    got = _tokens(deployed.token_predictor(modules, **options), cond, uncond, (5, 6), **sampling)
    assert len(set(expected.flatten().tolist())) > 1  # a real draw, not one repeated token
    assert torch.equal(got, expected)


@pytest.mark.slow
def test_images_match_torch(pipes):
    from onnx_checks import pixel_distance

    torch_pipe, onnx_pipe = pipes
    assert onnx_pipe.onnx_torch_built == [] and onnx_pipe.onnx_torch_fallback == []
    assert set(onnx_pipe.onnx_deployed) == {"tokenizer", "text_encoder", "denoiser", "decoder"}
    for fields in ({"seed": 3, "batch_size": 2}, {"seed": 4, "cfg_scale": 1.0},
                   {"seed": 5, "top_k": 1}):  # fmt: skip
        expected = torch_pipe(PROMPT, **fields)
        got = onnx_pipe(PROMPT, **fields)
        assert pixel_distance(got.images, expected.images) <= 2, fields
        assert got.infotexts == expected.infotexts
    assert np.asarray(expected.images[0]).std() > 0


@pytest.mark.slow
def test_image_priming_and_preview_match_torch(pipes):
    """img2img (the dvae_encoder's tokens prime the top rows) and the live preview's
    partial-grid decode (undrawn cells: the codebook's mean)."""
    from onnx_checks import pixel_distance
    from PIL import Image as PILImage

    from t2i.contracts import UNDRAWN
    from t2i.payloads import Image, Latent

    torch_pipe, onnx_pipe = pipes
    pil = PILImage.fromarray((torch.rand(64, 64, 3).numpy() * 255).astype("uint8"))
    fields = {"init_image": pil, "prime_rows": 5, "seed": 1}
    expected = torch_pipe("a red circle", **fields)
    assert pixel_distance(onnx_pipe("a red circle", **fields).images, expected.images) <= 2
    decoders = [_decoder(torch_pipe), _decoder(onnx_pipe)]
    pixels = Image(torch.rand(2, 3, 64, 64))
    a, b = (d.encode(pixels).samples for d in decoders)
    assert torch.equal(a, b)
    grid = a.clone()
    grid[:, :, 9:] = UNDRAWN
    previews = [d.decode_preview(Latent(grid)).pixels for d in decoders]
    assert float((previews[0] - previews[1]).detach().abs().max()) <= TOLERANCE


def _decoder(pipe):
    found = []

    def collect(node, kind, component):
        if kind == "decoder":
            found.append(component)
        return component

    pipe.map_components(collect)
    return found[0]


SCRIPT = """
import json, sys
from t2i.engine import Engine
pipe = Engine.build(runtime="onnx", onnx_dir=sys.argv[1])
pipe("a red circle", seed=1)
forbidden = json.loads(sys.argv[2])  # modules, and their submodules
names = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in forbidden))
print(json.dumps({"imported": names, "torch_built": pipe.onnx_torch_built,
                  "deployed": pipe.onnx_deployed}))
"""
FORBIDDEN = ("t2i_dalle.transformer", "t2i_dalle.dvae", "t2i_dalle.export",
             "t2i_dalle.trainables", "t2i_dalle.mini")  # fmt: skip


@pytest.mark.slow
def test_an_onnx_generation_imports_no_model_code(dalle_export):
    """In a fresh interpreter: no transformer / dVAE module is imported, no weights read."""
    out, manifest = dalle_export
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), json.dumps(FORBIDDEN)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "T2I_LOAD_PLUGINS": "dalle,onnx"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["imported"] == [] and found["torch_built"] == []
    assert set(found["deployed"]) == set(manifest["components"])


# -- DALL-E Mini ------------------------------------------------------------------------------
MINI_MODELS = {"text_encoder", "decoder_prefill", "decoder_decode", "vqgan_decoder"}
MINI_WORDS = ("a", "red", "circle", "blue", "square", "on", "the", "left", "avocado", "chair")


@pytest.fixture(scope="module")
def mini_folder(tmp_path_factory):
    """A min-dalle-layout folder of random weights: a 2-layer BART (width 128; LayerNorm
    affines and the head scaled away from their init, so that logits are peaked), the
    full-size VQGAN, a BPE vocabulary over a few words (tests/plugins/dalle/test_dalle_mini.py
    builds the same files with min-dalle's modules)."""
    from t2i_dalle.mini.bart import BartConfig, BartDecoder, BartEncoder
    from t2i_dalle.mini.vqgan import VQGANDetokenizer

    vocab, merges = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, []
    for w in MINI_WORDS:
        parts = ["Ġ", *w]
        for p in parts:
            vocab.setdefault(p, len(vocab))
        while len(parts) > 1:
            merges.append((parts[0], parts[1]))
            parts = [parts[0] + parts[1], *parts[2:]]
            vocab.setdefault(parts[0], len(vocab))
    merges = list(dict.fromkeys(merges))
    torch.manual_seed(0)
    config = BartConfig(layers=2, heads=2, embed=128, glu=96, text_vocab=len(vocab), text_len=64)
    enc, dec, det = BartEncoder(config), BartDecoder(config), VQGANDetokenizer()
    with torch.no_grad():
        for module in (enc, dec):
            for name, p in module.named_parameters():
                if "norm" in name or name.endswith("ln0.weight") or "_ln" in name:
                    torch.nn.init.normal_(p, 1.0 if name.endswith("weight") else 0.0, 0.2)
        dec.lm_head.weight.mul_(20.0)
    folder = tmp_path_factory.mktemp("mini") / "model"
    folder.mkdir()
    for name, module in (("encoder", enc), ("decoder", dec), ("detoker", det)):
        torch.save(module.state_dict(), folder / f"{name}.pt")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder


@pytest.fixture(scope="module")
def mini_export(mini_folder, dalle_manager, tmp_path_factory):
    from t2i_onnx.exporter import export_recipe

    out = tmp_path_factory.mktemp("mini-onnx") / "mini"
    options = {"checkpoint": str(mini_folder)}
    return out, export_recipe("dalle-mini", out, options=options, plugins=dalle_manager)


@pytest.fixture(scope="module")
def mini_pipes(mini_folder, dalle_manager, mini_export):
    torch_pipe = Engine.build("dalle-mini", plugins=dalle_manager, checkpoint=mini_folder)
    onnx_pipe = Engine.build(runtime="onnx", plugins=dalle_manager, onnx_dir=mini_export[0])
    return torch_pipe, onnx_pipe


@pytest.mark.slow
def test_mini_manifest_models_and_no_custom_ops(mini_export, mini_pipes):
    from onnx_checks import custom_domains, example_parity

    out, manifest = mini_export
    assert set(manifest["models"]) == MINI_MODELS
    components = manifest["components"]
    assert set(components) == {"tokenizer", "text_encoder", "denoiser", "decoder"}
    assert all(c["deployment"] for c in components.values())
    decode = {v["name"]: v["shape"] for v in manifest["models"]["decoder_decode"]["inputs"]}
    assert decode["past_key_values.1.decoder.key"] == [
        "batch_size", 2, "past_sequence_length", 64]  # fmt: skip
    assert decode["past_key_values.1.encoder.key"] == ["batch_size", 2, 64, 64]
    outputs = [v["name"] for v in manifest["models"]["decoder_decode"]["outputs"]]
    assert not [n for n in outputs if ".encoder." in n]  # the cross K/V are inputs only
    assert custom_domains(out) == set()
    # the VQGAN: ~30 random convs deep, fp32 ORT vs torch reach 1.4e-4 (0.04/255 of a pixel)
    errors = example_parity(mini_pipes[0], out, {"vqgan_decoder": 5e-4}, TOLERANCE)
    print("max abs error per model:", errors)
    assert set(errors) == MINI_MODELS


@pytest.mark.slow
def test_mini_prefill_and_decode_match_torch_with_the_cache(mini_export, mini_folder):
    """``decoder_prefill`` then decode steps (the ONNX cache fed back) vs the torch decoder's
    own :class:`MaskedCache`, over padded text masks, batch 1 / 3 and prefixes of 1 / 4."""
    from t2i_dalle.mini.bart import START_TOKEN
    from t2i_dalle.mini.checkpoint import load_mini

    out, _ = mini_export
    dec = load_mini(mini_folder).decoder
    c = dec.config
    prefill, decode = _session(out, "decoder_prefill"), _session(out, "decoder_decode")
    gen = torch.Generator().manual_seed(2)
    worst = {"prefill": (0.0, 0.0), "decode": (0.0, 0.0)}
    for batch, length in [(1, 1), (3, 4)]:
        states = torch.randn(batch, c.text_len, c.embed, generator=gen)
        mask = torch.ones(batch, c.text_len, dtype=torch.bool)
        mask[-1, 10:] = False
        tokens = torch.randint(0, 2**14, (batch, length), generator=gen)
        tokens[:, 0] = START_TOKEN
        with torch.no_grad():
            logits, cache = dec(tokens, states, mask, None)
        feed = {"encoder_hidden_states": states.numpy(), "text_mask": mask.numpy(),
                "tokens": tokens.numpy()}  # fmt: skip
        got = prefill.run(None, feed)
        expected = [logits[:, -1, : 2**14]] + [
            t for kv in zip(cache.keys, cache.values) for t in kv
        ]
        for g, e in zip(got, expected, strict=True):
            worst["prefill"] = max(worst["prefill"], _err(g, e))
        past = got[1:]
        for _ in range(12):
            token = torch.randint(0, 2**14, (batch, 1), generator=gen)
            feed = {"token": token.numpy(), "position": np.array(cache.length, dtype=np.int64),
                    "text_mask": mask.numpy()}  # fmt: skip
            for i in range(c.layers):
                for j, part in enumerate(("decoder.key", "decoder.value", "encoder.key",
                                          "encoder.value")):  # fmt: skip
                    feed[f"past_key_values.{i}.{part}"] = past[4 * i + j]
            with torch.no_grad():
                logits, cache = dec(token, None, None, cache)
            got = decode.run(None, feed)
            expected = [logits[:, -1, : 2**14]]
            for i in range(c.layers):
                expected += [cache.keys[2 * i], cache.values[2 * i]]
            for g, e in zip(got, expected, strict=True):
                assert g.shape == tuple(e.shape)
                worst["decode"] = max(worst["decode"], _err(g, e))
            for i in range(c.layers):
                past[4 * i], past[4 * i + 1] = got[1 + 2 * i], got[2 + 2 * i]
    print("max (abs, rel) error:", worst)
    assert all(a <= TOLERANCE and r <= TOLERANCE for a, r in worst.values()), worst


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [{"top_k": 16}, {"top_k": 1}])
def test_mini_deployed_predictor_draws_the_torch_tokens(mini_folder, mini_export, sampling):
    from t2i_dalle.mini import deployed
    from t2i_dalle.mini.recipes import create_predictor, create_text_encoder, create_tokenizer
    from t2i_onnx.runtime import OrtModule

    out, manifest = mini_export
    tok, enc = create_tokenizer(checkpoint=mini_folder), create_text_encoder(checkpoint=mini_folder)
    cond, uncond = enc(tok(["a red circle", "a blue square on the left"])), enc(tok(["", ""]))
    torch_predictor = create_predictor(checkpoint=mini_folder)
    expected = _tokens(torch_predictor, cond, uncond, (5, 6), **sampling)
    options = manifest["components"]["denoiser"]["deployment"]["options"]
    modules = {n: OrtModule(_session(out, n)) for n in ("decoder_prefill", "decoder_decode")}
    got = _tokens(deployed.token_predictor(modules, **options), cond, uncond, (5, 6), **sampling)
    assert len(set(expected.flatten().tolist())) > 1
    assert torch.equal(got, expected)


@pytest.mark.slow
def test_mini_images_and_preview_match_torch(mini_pipes):
    from onnx_checks import pixel_distance

    from t2i.contracts import UNDRAWN
    from t2i.payloads import Latent

    torch_pipe, onnx_pipe = mini_pipes
    assert onnx_pipe.onnx_torch_built == [] and onnx_pipe.onnx_torch_fallback == []
    assert set(onnx_pipe.onnx_deployed) == {"tokenizer", "text_encoder", "denoiser", "decoder"}
    expected = torch_pipe("a red circle", seed=3)
    got = onnx_pipe("a red circle", seed=3)
    assert pixel_distance(got.images, expected.images) <= 2
    assert got.infotexts == expected.infotexts
    grid = torch.randint(0, 2**14, (1, 1, 16, 16))
    grid[:, :, 7:] = UNDRAWN
    a, b = (_decoder(p).decode_preview(Latent(grid)).pixels for p in mini_pipes)
    assert float((a - b).detach().abs().max()) <= 5e-4


@pytest.mark.slow
def test_an_onnx_mini_generation_imports_no_model_code(mini_export):
    out, manifest = mini_export
    forbidden = ("t2i_dalle.mini.bart", "t2i_dalle.mini.vqgan", "t2i_dalle.mini.export",
                 "t2i_dalle.transformer", "t2i_dalle.dvae")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), json.dumps(forbidden)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "T2I_LOAD_PLUGINS": "dalle,onnx"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["imported"] == [] and found["torch_built"] == []
    assert set(found["deployed"]) == set(manifest["components"])
