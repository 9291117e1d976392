"""Textual-inversion embeddings (issue 20, item 3): A1111's ``.pt`` (``string_to_param``) and
``.safetensors`` (``emb_params``) layouts, SDXL ``clip_l`` / ``clip_g`` pairs, used by file
name in prompts; the prompt conditioning matches diffusers' ``load_textual_inversion``."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from t2i import Engine
from t2i.checkpoints import CheckpointError
from t2i.graph.errors import NodeExecutionError
from t2i.testing import make_manager
from t2i_ldm import plugin
from t2i_ldm.embeddings import EmbeddingLibrary, load_embedding

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embeddings")
    g = torch.Generator().manual_seed(0)
    vectors = {
        "shiny": torch.randn(2, 32, generator=g),
        "gloomy": torch.randn(3, 32, generator=g),
    }
    save_file({"emb_params": vectors["shiny"]}, str(folder / "shiny.safetensors"))
    torch.save(
        {"string_to_param": {"*": vectors["gloomy"]}, "name": "gloomy", "step": 500},
        folder / "gloomy.pt",
    )
    pair = {"clip_l": torch.randn(1, 768, generator=g), "clip_g": torch.randn(1, 1280, generator=g)}
    save_file(pair, str(folder / "xlstyle.safetensors"))
    save_file({"emb_params": torch.randn(1, 64, generator=g)}, str(folder / "wide.safetensors"))
    return folder, vectors


def _parts(folder, embeddings_dir, **options):
    pipe = Engine.build(
        "ldm",
        plugins=make_manager(plugin),
        checkpoint=str(folder),
        embeddings_dir=str(embeddings_dir),
        **options,
    )
    out = pipe.executor.run(pipe.graph, outputs=["tokenizer", "text_encoder"])
    return pipe, out["tokenizer"]["tokenizer"], out["text_encoder"]["text_encoder"]


def _diffusers_embeds(folder, files, prompt):
    ref = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None)
    for path, token in files:
        ref.load_textual_inversion(str(path), token=token)
    embeds, _ = ref.encode_prompt(prompt, "cpu", 1, False)
    return embeds


def test_prompt_conditioning_matches_diffusers_textual_inversion(tiny_sd, embeddings):
    _, folder = tiny_sd
    emb_dir, _ = embeddings
    prompt = "a photo of a shiny cube on top of a gloomy sphere"
    _, tokenizer, encoder = _parts(folder, emb_dir, allow_pickle=True)
    tokens = tokenizer([prompt])
    ours = encoder(tokens).embeds
    files = [(emb_dir / "shiny.safetensors", "shiny"), (emb_dir / "gloomy.pt", "gloomy")]
    expected = _diffusers_embeds(folder, files, prompt)
    assert ours.shape == expected.shape == (1, 77, 32)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    vocab = tokenizer.vocab_size
    assert int((tokens.ids >= vocab).sum()) == 5  # 2 + 3 vectors in place of the two names


def test_embedding_is_not_split_across_chunks(tiny_sd, embeddings):
    _, folder = tiny_sd
    emb_dir, _ = embeddings
    _, tokenizer, _ = _parts(folder, emb_dir, allow_pickle=True)
    text = " ".join(["cube"] * 74) + " gloomy"  # 74 tokens, then 3 vectors: the next chunk
    chunks = tokenizer.chunk_prompt(text)
    assert [len(c.ids) for c in chunks] == [74, 3]
    assert all(i >= tokenizer.vocab_size for i in chunks[1].ids)
    weighted = tokenizer.chunk_prompt("(shiny:1.3) cube")
    assert weighted[0].weights[:2] == [1.3, 1.3]


def test_layouts_and_sdxl_pairs(embeddings):
    emb_dir, vectors = embeddings
    shiny = load_embedding(emb_dir / "shiny.safetensors")
    torch.testing.assert_close(shiny.for_encoder(32), vectors["shiny"])
    gloomy = load_embedding(emb_dir / "gloomy.pt", allow_pickle=True)
    torch.testing.assert_close(gloomy.for_encoder(32), vectors["gloomy"])
    pair = load_embedding(emb_dir / "xlstyle.safetensors")
    assert set(pair.vectors) == {"clip_l", "clip_g"} and pair.count == 1
    assert pair.for_encoder(1280, "clip_g").shape == (1, 1280)
    with pytest.raises(ValueError, match="not a tensor for this text encoder"):
        pair.for_encoder(768)


def test_bad_embeddings_give_clear_errors(tiny_sd, embeddings, tmp_path):
    _, folder = tiny_sd
    emb_dir, _ = embeddings
    with pytest.raises(ValueError, match="has width 64, but this text encoder's is 32"):
        load_embedding(emb_dir / "wide.safetensors").for_encoder(32)
    pipe, _, _ = _parts(folder, emb_dir, allow_pickle=True)
    with pytest.raises(NodeExecutionError, match="width 64"):
        pipe("a wide cube", steps=1, width=16, height=16)  # used in a prompt: refused
    with pytest.raises(NodeExecutionError, match="made for another model"):
        pipe("an xlstyle cube", steps=1, width=16, height=16)
    save_file({"w1": torch.ones(2), "w2": torch.ones(2)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(CheckpointError, match="not a textual-inversion embedding"):
        load_embedding(tmp_path / "odd.safetensors")
    torch.save({"string_to_param": {"*": torch.ones(1, 32)}, "f": print}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_embedding(tmp_path / "evil.pt", allow_pickle=True)


def test_a_file_that_cannot_be_used_is_skipped_and_refused_only_when_a_prompt_names_it(
    tiny_sd, embeddings, tmp_path
):
    """As A1111: a pickle without allow_pickle, a truncated file, a LoRA dropped in the
    folder or a name two files share does not stop the model; the prompt that names one is
    refused with the reason, and every other embedding still works."""
    _, folder = tiny_sd
    emb_dir, vectors = embeddings
    mixed = tmp_path / "mixed"
    (mixed / "sub").mkdir(parents=True)
    for name in ("shiny.safetensors", "gloomy.pt"):
        (mixed / name).write_bytes((emb_dir / name).read_bytes())
    (mixed / "cut.safetensors").write_bytes((emb_dir / "shiny.safetensors").read_bytes()[:40])
    save_file({"lora_up.weight": torch.ones(4, 2), "lora_down.weight": torch.ones(2, 4)},
              str(mixed / "alora.safetensors"))  # fmt: skip
    save_file({"emb_params": torch.ones(1, 32)}, str(mixed / "twin.safetensors"))
    save_file({"emb_params": torch.zeros(1, 32)}, str(mixed / "sub" / "twin.safetensors"))

    library = EmbeddingLibrary.from_folder(mixed)  # no allow_pickle
    assert [e.name for e in library.embeddings] == ["shiny"]
    assert sorted(library.skipped) == ["alora", "cut", "gloomy", "twin"]
    assert "refusing to load a pickle" in str(library.skipped["gloomy"])
    assert "not a textual-inversion embedding" in str(library.skipped["alora"])
    assert "two embeddings are named 'twin'" in str(library.skipped["twin"])

    pipe, tokenizer, encoder = _parts(folder, mixed)
    ours = encoder(tokenizer(["a shiny cube"])).embeds
    expected = _diffusers_embeds(folder, [(mixed / "shiny.safetensors", "shiny")], "a shiny cube")
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    for word, reason in (("gloomy", "allow_pickle"), ("cut", "cut.safetensors"),
                         ("alora", "not a textual-inversion"), ("twin", "rename one")):  # fmt: skip
        with pytest.raises(NodeExecutionError, match=f"(?s)embedding '{word}'.*{reason}"):
            pipe(f"a {word} cube", steps=1, width=16, height=16)
    assert pipe("a cube", steps=1, width=16, height=16).images  # the rest still runs
    allowed = EmbeddingLibrary.from_folder(mixed, allow_pickle=True)
    torch.testing.assert_close(
        {e.name: e for e in allowed.embeddings}["gloomy"].for_encoder(32), vectors["gloomy"]
    )
