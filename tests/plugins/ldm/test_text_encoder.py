"""t2i_ldm.text_encoder against transformers' CLIPTextModel on random weights, tiny config."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from t2i.contracts import TextEncoder
from t2i.payloads import Tokens
from t2i_ldm.text_encoder import ClipTextEncoder, TextEncoderWeightsError, clip_text_config

VOCAB = 300
BOS, EOS = VOCAB - 2, VOCAB - 1


def tiny_config(**changes) -> CLIPTextConfig:
    options = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=1,
    )
    options.update(changes)
    return CLIPTextConfig(**options)


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial random weights everywhere (LayerNorms included)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def reference() -> CLIPTextModel:
    return randomize(CLIPTextModel(tiny_config()))


def sd1_state_dict(model: CLIPTextModel) -> dict[str, torch.Tensor]:
    """The model's weights as an SD1 single file holds them, plus unrelated keys."""
    state = {}
    for key, value in model.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + key] = value.clone()
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[
        None
    ]
    state["model.diffusion_model.out.2.weight"] = torch.zeros(3)
    return state


def random_tokens(batch: int, n_chunks: int, generator=None) -> Tokens:
    """Chunked ids like ClipTokenizer's: BOS, content, EOS, padding; random weights."""
    ids = torch.full((batch, n_chunks, 77), EOS, dtype=torch.int64)
    ids[:, :, 0] = BOS
    for b in range(batch):
        for c in range(n_chunks):
            n = int(torch.randint(0, 76, (1,), generator=generator))
            ids[b, c, 1 : n + 1] = torch.randint(0, VOCAB - 2, (n,), generator=generator)
    weights = torch.empty(batch, n_chunks, 77).uniform_(0.5, 1.6, generator=generator)
    return Tokens(ids=ids.view(batch, -1), weights=weights.view(batch, -1))


def expected_embeds(states: torch.Tensor, weights: torch.Tensor, mode: str) -> torch.Tensor:
    """Web UI emphasis in float64: weight each token, then restore the chunk's mean."""
    states, weights = states.double(), weights.double()
    if mode == "ignore":
        return states
    out = states * weights[..., None]
    if mode == "original":
        out = out * (states.mean(dim=(1, 2)) / out.mean(dim=(1, 2)))[:, None, None]
    return out


def reference_chunks(model: CLIPTextModel, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the reference on each 77-token chunk on its own; (B*n, 77, D) and pooled (B*n, D)."""
    states, pooled = [], []
    with torch.no_grad():
        for row in tokens.ids.view(-1, 77):
            out = model(input_ids=row[None])
            states.append(out.last_hidden_state[0])
            pooled.append(out.pooler_output[0])
    return torch.stack(states), torch.stack(pooled)


def assert_close(got: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    error = (got.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    assert error <= rel * scale, f"max error {error:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("mode", ["original", "no_norm", "ignore"])
def test_matches_transformers_per_chunk_with_emphasis(reference, mode):
    encoder = ClipTextEncoder.from_state_dict(sd1_state_dict(reference), head_dim=16, emphasis=mode)
    assert isinstance(encoder, TextEncoder)
    tokens = random_tokens(batch=2, n_chunks=3)
    cond = encoder(tokens)
    assert cond.embeds.shape == (2, 3 * 77, 32)
    assert cond.pooled.shape == (2, 32)
    assert cond.mask is None
    states, pooled = reference_chunks(reference, tokens)
    expected = expected_embeds(states, tokens.weights.view(-1, 77), mode).view(2, 3 * 77, 32)
    assert_close(cond.embeds, expected)
    assert_close(cond.pooled, pooled.view(2, 3, 32)[:, 0])


def test_original_emphasis_keeps_each_chunk_mean(reference):
    encoder = ClipTextEncoder.from_state_dict(sd1_state_dict(reference), head_dim=16)
    tokens = random_tokens(batch=1, n_chunks=2)
    plain = encoder(Tokens(ids=tokens.ids))
    weighted = encoder(tokens)
    for c in range(2):
        part = slice(77 * c, 77 * (c + 1))
        assert weighted.embeds[0, part].mean().item() == pytest.approx(
            plain.embeds[0, part].mean().item(), rel=1e-4, abs=1e-6
        )
    assert not torch.allclose(weighted.embeds, plain.embeds)


def test_clip_skip_2_is_penultimate_layer_through_final_norm(reference):
    """Reference: the same weights in a model one layer shorter."""
    encoder = ClipTextEncoder.from_state_dict(sd1_state_dict(reference), head_dim=16, clip_skip=2)
    shorter = CLIPTextModel(tiny_config(num_hidden_layers=2)).eval()
    shorter.load_state_dict(
        {k: v for k, v in reference.state_dict().items() if "layers.2." not in k}
    )
    tokens = random_tokens(batch=2, n_chunks=1)
    states, _ = reference_chunks(shorter, tokens)
    cond = encoder(Tokens(ids=tokens.ids))
    assert_close(cond.embeds, states.view(2, 77, 32))
    last = ClipTextEncoder.from_state_dict(sd1_state_dict(reference), head_dim=16)
    assert not torch.allclose(last(Tokens(ids=tokens.ids)).embeds, cond.embeds)
    assert_close(last.encode(Tokens(ids=tokens.ids), clip_skip=2).embeds, cond.embeds)


def test_diffusers_folder_layout(reference, tmp_path):
    reference.save_pretrained(tmp_path / "text_encoder")
    encoder = ClipTextEncoder.from_folder(tmp_path / "text_encoder")
    assert encoder.model.config.hidden_act == "quick_gelu"
    tokens = random_tokens(batch=1, n_chunks=2)
    states, _ = reference_chunks(reference, tokens)
    expected = expected_embeds(states, tokens.weights.view(-1, 77), "original").view(1, 154, 32)
    assert_close(encoder(tokens).embeds, expected)


def test_end_to_end_with_tokenizer_thousand_token_prompt(reference):
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from t2i_ldm.tokenizer import ClipTokenizer

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = ClipTokenizer.from_vocab_and_merges({t: i for i, t in enumerate(tokens)}, [])
    config = tiny_config(vocab_size=len(tokens), bos_token_id=512, eos_token_id=513)
    model = randomize(CLIPTextModel(config)).double()  # float64: 14 chunks' rounding, not ours
    encoder = ClipTextEncoder.from_state_dict(model.state_dict(), config=config)
    encoder.to(dtype=torch.float64)
    batch = tokenizer(["x " * 1000, "", "a (b:1.3) [c] ((d"])  # one character = one token here
    assert batch.ids.shape == (3, 14 * 77)
    cond = encoder(batch)
    assert cond.embeds.shape == (3, 14 * 77, 32)
    assert torch.isfinite(cond.embeds).all()
    states, _ = reference_chunks(model, batch)
    expected = expected_embeds(states, batch.weights.view(-1, 77), "original")
    assert_close(cond.embeds, expected.view(3, 14 * 77, 32))


def test_mismatched_state_dict_names_the_keys(reference):
    state = sd1_state_dict(reference)
    del state["cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.bias"]
    state["cond_stage_model.transformer.text_model.encoder.layers.0.extra"] = torch.zeros(1)
    with pytest.raises(TextEncoderWeightsError, match=r"layers\.1\.mlp\.fc2\.bias") as info:
        ClipTextEncoder.from_state_dict(state, head_dim=16)
    assert "layers.0.extra" in str(info.value)
    state = sd1_state_dict(reference)
    state["cond_stage_model.transformer.text_model.final_layer_norm.bias"] = torch.zeros(7)
    with pytest.raises(TextEncoderWeightsError, match=r"final_layer_norm\.bias: \(7,\)"):
        ClipTextEncoder.from_state_dict(state, head_dim=16)
    with pytest.raises(TextEncoderWeightsError, match="not a CLIP text model"):
        ClipTextEncoder.from_state_dict({"foo": torch.zeros(1)}, head_dim=16)


def test_bad_tokens_and_options_are_clear_errors(reference):
    encoder = ClipTextEncoder.from_state_dict(sd1_state_dict(reference), head_dim=16)
    with pytest.raises(ValueError, match="multiple of 77"):
        encoder(Tokens(ids=torch.zeros(1, 80, dtype=torch.int64)))
    with pytest.raises(ValueError, match="token ids must be in"):
        encoder(Tokens(ids=torch.full((1, 77), VOCAB, dtype=torch.int64)))
    with pytest.raises(ValueError, match="clip_skip"):
        ClipTextEncoder(encoder.model, clip_skip=4)
    with pytest.raises(ValueError, match="emphasis"):
        ClipTextEncoder(encoder.model, emphasis="loud")


def test_named_configs():
    assert clip_text_config("clip_l").num_hidden_layers == 12
    h = clip_text_config("OpenCLIP-H")
    assert (h.hidden_size, h.num_hidden_layers, h.hidden_act) == (1024, 23, "gelu")
    with pytest.raises(KeyError, match="known"):
        clip_text_config("t5")
