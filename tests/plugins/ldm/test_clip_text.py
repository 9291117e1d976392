"""``t2i_ldm.clip_text`` (our CLIP text transformer) against transformers' ``CLIPTextModel``
on random weights: the same state-dict keys, and bit-identical outputs on the CPU."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from t2i.checkpoints import CheckpointError
from t2i.payloads import Tokens
from t2i_ldm.clip_text import ClipTextConfig, ClipTextModel, load_clip_text_model
from t2i_ldm.text_encoder import ClipTextEncoder

SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, projection_dim=64,
             num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=77,
             pad_token_id=299, bos_token_id=298, eos_token_id=299)  # fmt: skip


def pair(**changes):
    torch.manual_seed(0)
    values = {**SMALL, **changes}
    reference = CLIPTextModel(CLIPTextConfig(**values)).eval()
    ours = load_clip_text_model(ClipTextConfig.from_dict(values), reference.state_dict())
    return reference, ours


def token_ids(batch=3, vocab=300, eos=299, length=77):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab - 2, (batch, length), generator=g)
    ids[:, 0] = vocab - 2
    for row in range(batch):
        ids[row, 5 + 7 * row :] = eos  # the end token, then padding with it (SD1)
    return ids


@pytest.mark.parametrize(
    "changes",
    [{}, {"hidden_act": "gelu"}, {"eos_token_id": 2}, {"num_attention_heads": 1}],
    ids=["quick_gelu", "gelu", "legacy-eos-2", "one-head"],
)
def test_outputs_equal_transformers_bit_for_bit(changes):
    reference, ours = pair(**changes)
    assert list(ours.state_dict()) == list(reference.state_dict())  # same keys, same order
    ids = token_ids()
    with torch.no_grad():
        want = reference(input_ids=ids, output_hidden_states=True)
        got = ours(input_ids=ids, output_hidden_states=True)
    assert torch.equal(got.last_hidden_state, want.last_hidden_state)
    assert torch.equal(got.pooler_output, want.pooler_output)
    assert len(got.hidden_states) == len(want.hidden_states) == SMALL["num_hidden_layers"] + 1
    assert all(torch.equal(a, b) for a, b in zip(got.hidden_states, want.hidden_states))
    short = ids[:, :9]  # fewer tokens than positions
    with torch.no_grad():
        assert torch.equal(ours(short).last_hidden_state, reference(short).last_hidden_state)


def test_the_sd_text_encoder_runs_it_as_transformers_model():
    """ClipTextEncoder (chunks, clip skip, emphasis, pad chunk) gives the same conditioning."""
    reference, ours = pair()
    ids = torch.cat([token_ids(2), token_ids(2)], dim=1)  # two 77-token chunks
    weights = torch.ones(ids.shape)
    weights[:, 3] = 1.4
    pad = token_ids(1)[:, :77]
    tokens = Tokens(ids=ids, weights=weights, pad_chunk=pad)
    for clip_skip in (1, 2):
        want = ClipTextEncoder(reference, clip_skip=clip_skip)(tokens)
        got = ClipTextEncoder(ours, clip_skip=clip_skip)(tokens)
        assert torch.equal(got.embeds, want.embeds) and torch.equal(got.pooled, want.pooled)
        assert torch.equal(got.pad_chunk, want.pad_chunk)
    lora = ClipTextEncoder(ours).lora_modules()
    assert set(lora) == set(ClipTextEncoder(reference).lora_modules())


def test_loading_is_checked_and_builds_no_random_weights():
    reference, _ = pair()
    state = reference.state_dict()
    del state["encoder.layers.0.mlp.fc1.bias"]
    with pytest.raises(CheckpointError, match=r"fc1\.bias"):
        load_clip_text_model(ClipTextConfig.from_dict(SMALL), state)
    _, ours = pair()
    assert not any(t.is_meta for t in [*ours.parameters(), *ours.buffers()])
    assert not any(p.requires_grad for p in ours.parameters()) and not ours.training
    assert torch.equal(ours.embeddings.position_ids, torch.arange(77)[None])


def test_config_refuses_what_it_does_not_read():
    with pytest.raises(ValueError, match="rope_theta"):
        ClipTextConfig.from_dict({**SMALL, "rope_theta": 1.0})
    with pytest.raises(ValueError, match="hidden_act"):
        ClipTextConfig.from_dict({**SMALL, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="multiple"):
        ClipTextConfig.from_dict({**SMALL, "num_attention_heads": 5})
    assert isinstance(ClipTextModel(ClipTextConfig.from_dict(SMALL)), torch.nn.Module)


def test_gradient_checkpointing_recomputes_with_the_same_gradients(monkeypatch):
    """``encoder.gradient_checkpointing`` (the flag DreamBooth's ``--gradient-checkpointing``
    turns on, as on transformers' model) recomputes each layer; gradients do not change."""
    import torch.utils.checkpoint as checkpointing

    calls = []
    real = checkpointing.checkpoint
    monkeypatch.setattr(
        checkpointing, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    _, ours = pair()
    ours.train().requires_grad_(True)
    grads = []
    for flag in (False, True):
        ours.zero_grad()
        ours.encoder.gradient_checkpointing = flag
        ours(token_ids(2)).last_hidden_state.square().mean().backward()
        grads.append(ours.encoder.layers[0].mlp.fc1.weight.grad.clone())
    assert len(calls) == SMALL["num_hidden_layers"]  # only with the flag, once per layer
    assert torch.allclose(grads[0], grads[1])
