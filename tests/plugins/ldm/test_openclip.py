"""t2i_ldm.openclip against an independent float64 OpenCLIP text transformer written here."""

from __future__ import annotations

import math

import pytest
import torch

from t2i.payloads import Tokens
from t2i_ldm.openclip import (
    OpenClipConversionError,
    convert_openclip_text,
    load_openclip_text_model,
)
from t2i_ldm.text_encoder import ClipTextEncoder

WIDTH, HEADS, BLOCKS, VOCAB, CONTEXT = 32, 2, 3, 200, 77
PREFIX = "cond_stage_model.model."


def random_openclip_state_dict() -> dict[str, torch.Tensor]:
    """An OpenCLIP text tower as SD2 single files store it, random weights (+ unrelated keys)."""
    r = lambda *shape, s=0.2: torch.randn(*shape) * s  # noqa: E731
    state = {
        "token_embedding.weight": r(VOCAB, WIDTH, s=0.5),
        "positional_embedding": r(CONTEXT, WIDTH),
        "ln_final.weight": 1 + r(WIDTH),
        "ln_final.bias": r(WIDTH),
        "text_projection": r(WIDTH, 24),
        "logit_scale": torch.tensor(4.6),
    }
    for i in range(BLOCKS):
        block = f"transformer.resblocks.{i}."
        state |= {
            block + "ln_1.weight": 1 + r(WIDTH),
            block + "ln_1.bias": r(WIDTH),
            block + "attn.in_proj_weight": r(3 * WIDTH, WIDTH),
            block + "attn.in_proj_bias": r(3 * WIDTH),
            block + "attn.out_proj.weight": r(WIDTH, WIDTH),
            block + "attn.out_proj.bias": r(WIDTH),
            block + "ln_2.weight": 1 + r(WIDTH),
            block + "ln_2.bias": r(WIDTH),
            block + "mlp.c_fc.weight": r(4 * WIDTH, WIDTH),
            block + "mlp.c_fc.bias": r(4 * WIDTH),
            block + "mlp.c_proj.weight": r(WIDTH, 4 * WIDTH),
            block + "mlp.c_proj.bias": r(WIDTH),
        }
    full = {PREFIX + k: v for k, v in state.items()}
    full["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(1)
    return full


def openclip_text_reference(state: dict, ids: torch.Tensor, blocks: int) -> torch.Tensor:
    """OpenCLIP's text transformer from its published structure, float64, ``blocks`` deep.

    x = tok_emb + pos; each residual block: x += attn(ln_1(x)) with a causal mask and a packed
    (3W, W) in-projection, then x += c_proj(gelu(c_fc(ln_2(x)))); finally ln_final.
    """
    s = {k[len(PREFIX) :]: v.double() for k, v in state.items() if k.startswith(PREFIX)}

    def layer_norm(x, name):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * s[name + ".weight"] + s[name + ".bias"]

    b, t = ids.shape
    x = s["token_embedding.weight"][ids] + s["positional_embedding"][:t]
    causal = torch.full((t, t), -math.inf, dtype=torch.float64).triu(1)
    head = WIDTH // HEADS
    for i in range(blocks):
        p = f"transformer.resblocks.{i}."
        h = layer_norm(x, p + "ln_1")
        qkv = h @ s[p + "attn.in_proj_weight"].T + s[p + "attn.in_proj_bias"]
        q, k, v = (z.view(b, t, HEADS, head).transpose(1, 2) for z in qkv.split(WIDTH, dim=-1))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head) + causal  # (B, H, T, T)
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, WIDTH)
        x = x + attn @ s[p + "attn.out_proj.weight"].T + s[p + "attn.out_proj.bias"]
        h = layer_norm(x, p + "ln_2")
        h = h @ s[p + "mlp.c_fc.weight"].T + s[p + "mlp.c_fc.bias"]
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
        x = x + h @ s[p + "mlp.c_proj.weight"].T + s[p + "mlp.c_proj.bias"]
    return layer_norm(x, "ln_final")


def sd2_ids(batch: int) -> torch.Tensor:
    """SD2-style chunks: BOS, content, EOS, zero padding."""
    ids = torch.zeros(batch, CONTEXT, dtype=torch.int64)
    for row in range(batch):
        n = int(torch.randint(0, 76, (1,)))
        ids[row, 0] = VOCAB - 2
        ids[row, 1 : n + 1] = torch.randint(0, VOCAB - 2, (n,))
        ids[row, n + 1] = VOCAB - 1
    return ids


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected).abs().max() / expected.abs().max()).item()


def test_penultimate_layer_matches_reference():
    state = random_openclip_state_dict()
    encoder = ClipTextEncoder.from_state_dict(state, head_dim=WIDTH // HEADS)
    config = encoder.model.config
    assert (config.num_hidden_layers, config.hidden_act) == (BLOCKS - 1, "gelu")
    ids = sd2_ids(3)
    got = encoder(Tokens(ids=ids)).embeds
    expected = openclip_text_reference(state, ids, blocks=BLOCKS - 1)
    assert relative_error(got, expected) < 1e-4


def test_all_layers_match_reference_and_differ_from_penultimate():
    state = random_openclip_state_dict()
    model = load_openclip_text_model(state, layers_used=BLOCKS, head_dim=WIDTH // HEADS)
    ids = sd2_ids(2)
    with torch.no_grad():
        got = model(input_ids=ids).last_hidden_state
    expected = openclip_text_reference(state, ids, blocks=BLOCKS)
    assert relative_error(got, expected) < 1e-4
    penultimate = openclip_text_reference(state, ids, blocks=BLOCKS - 1)
    assert relative_error(got, penultimate) > 1e-2


def test_multi_chunk_and_emphasis_run_through_the_same_encoder():
    state = random_openclip_state_dict()
    encoder = ClipTextEncoder.from_state_dict(state, head_dim=WIDTH // HEADS)
    ids = torch.cat([sd2_ids(2), sd2_ids(2)], dim=1)  # two chunks per prompt
    weights = torch.empty(2, 2 * CONTEXT).uniform_(0.8, 1.3)
    cond = encoder(Tokens(ids=ids, weights=weights))
    assert cond.embeds.shape == (2, 2 * CONTEXT, WIDTH)
    for c in range(2):
        part = slice(CONTEXT * c, CONTEXT * (c + 1))
        raw = openclip_text_reference(state, ids[:, part], blocks=BLOCKS - 1)
        weighted = raw * weights[:, part, None].double()
        expected = weighted * (raw.mean((1, 2)) / weighted.mean((1, 2)))[:, None, None]
        assert relative_error(cond.embeds[:, part], expected) < 1e-4


def test_key_map_accounts_for_every_key():
    state = random_openclip_state_dict()
    weights, config = convert_openclip_text(state, head_dim=WIDTH // HEADS)
    assert (config.num_hidden_layers, config.num_attention_heads) == (BLOCKS - 1, HEADS)
    n_layer_keys = 16  # q, k, v, out (w, b) + 2 LayerNorms (w, b) + fc1, fc2 (w, b)
    assert len(weights) == 2 + 2 + n_layer_keys * (BLOCKS - 1)
    assert not any("layers.2." in k for k in weights)
    w = state[PREFIX + "transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(weights["text_model.encoder.layers.1.self_attn.k_proj.weight"], w[32:64])


def test_unknown_missing_and_misshaped_keys_are_named():
    state = random_openclip_state_dict()
    state[PREFIX + "transformer.resblocks.0.attn.mystery"] = torch.zeros(1)
    with pytest.raises(OpenClipConversionError, match=r"resblocks\.0\.attn\.mystery"):
        convert_openclip_text(state, head_dim=16)
    state = random_openclip_state_dict()
    del state[PREFIX + "transformer.resblocks.1.ln_2.bias"]
    with pytest.raises(OpenClipConversionError, match=r"layers\.1\.layer_norm2\.bias"):
        convert_openclip_text(state, head_dim=16)
    state = random_openclip_state_dict()
    state[PREFIX + "transformer.resblocks.0.attn.in_proj_bias"] = torch.zeros(5)
    with pytest.raises(OpenClipConversionError, match="in_proj_bias"):
        convert_openclip_text(state, head_dim=16)
    with pytest.raises(OpenClipConversionError, match="not an OpenCLIP"):
        convert_openclip_text({"foo": torch.zeros(1)})
    with pytest.raises(OpenClipConversionError, match="layers_used"):
        convert_openclip_text(random_openclip_state_dict(), layers_used=9, head_dim=16)
