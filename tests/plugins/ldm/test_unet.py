"""t2i_ldm.unet: parity with diffusers' UNet2DConditionModel (test-only reference) on tiny
configs of each SD variant, the timestep embedding, validation and training helpers."""

from __future__ import annotations

import math

import attrs
import pytest
import torch

from t2i_ldm.config import SD1_UNET, SD2_UNET, TINY_UNET, TINY_UNET_SD2, UNetConfig
from t2i_ldm.diffusers_format import load_diffusers_unet
from t2i_ldm.unet import UNetModel, timestep_embedding

diffusers = pytest.importorskip("diffusers")

VARIANTS = {
    # SD1 style: 8-head-like int heads, conv proj_in/proj_out
    "sd1": dict(attention_head_dim=2),
    # SD2 style: head dim constant (heads per block 2, 4), linear projections, upcast attention
    "sd2": dict(attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True),
    # deeper: two attention levels, transformer depth 2, 3 levels, 2 res blocks
    "deep": dict(
        attention_head_dim=4,
        block_out_channels=(16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=2,
        transformer_layers_per_block=2,
    ),
}


def _diffusers_unet(**kw):
    args = dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        sample_size=16,
    )
    args.update(kw)
    model = diffusers.UNet2DConditionModel(**args)
    with torch.no_grad():  # zero-initialised output convs would hide mapping errors
        for p in model.parameters():
            p.normal_(0.0, 0.15)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    torch.manual_seed(hash(request.param) % 1000)
    ref = _diffusers_unet(**VARIANTS[request.param])
    folder = tmp_path_factory.mktemp(f"unet_{request.param}")
    ref.save_pretrained(folder)
    return ref, load_diffusers_unet(folder)


def test_unet_matches_diffusers(pair):
    ref, ours = pair
    b = 2
    x = torch.randn(b, 4, 16, 16)
    context = torch.randn(b, 7, 32)
    t = torch.rand(b) * 999  # fractional timesteps, as samplers pass them
    with torch.no_grad():
        expected = ref(x, t, context).sample
        got = ours(x, t, context)
    assert got.shape == expected.shape
    # a non-trivial output (random weights: 0.07-0.5), so the comparison can fail
    assert expected.std() > 0.01
    assert _rel(got, expected) < 1e-4


def test_unet_config_translation(pair):
    ref, ours = pair
    cfg = ours.config
    assert cfg.context_dim == ref.config.cross_attention_dim
    assert cfg.use_linear_projection == ref.config.use_linear_projection
    assert cfg.upcast_attention == ref.config.upcast_attention
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in ref.parameters())


def test_scalar_timestep_broadcasts_and_batch1_context_expands():
    torch.manual_seed(0)
    model = UNetModel(TINY_UNET).eval()
    x = torch.randn(2, 4, 8, 8)
    ctx = torch.randn(1, 5, 32)
    with torch.no_grad():
        a = model(x, 250, ctx)
        b = model(x, torch.tensor([250.0, 250.0]), ctx.expand(2, -1, -1))
    torch.testing.assert_close(a, b)


def test_timestep_embedding_matches_float64_formula():
    t = torch.rand(5) * 1000
    dim = 10
    got = timestep_embedding(t, dim)
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    args = t.double()[:, None] * freqs
    expected = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # cos first (flip_sin_to_cos)
    torch.testing.assert_close(got.double(), expected, atol=2e-4, rtol=0)
    from diffusers.models.embeddings import get_timestep_embedding

    ref = get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("config", "params"),
    [(SD1_UNET, 859_520_964), (SD2_UNET, 865_910_724)],  # published SD1.5 / SD2.1 sizes
)
def test_full_configs_have_published_parameter_counts(config, params):
    with torch.device("meta"):
        model = UNetModel(config)
    assert sum(p.numel() for p in model.parameters()) == params
    if config.head_dim:
        heads = [config.heads_at(level) for level in range(config.num_levels)]
        assert heads == [5, 10, 20, 20]
        attn = model.input_blocks[1][1].transformer_blocks[0].attn1
        assert attn.heads == 5


def test_sd1_key_names_are_compvis():
    with torch.device("meta"):
        keys = set(UNetModel(SD1_UNET).state_dict())
    for key in (
        "time_embed.0.weight",
        "input_blocks.0.0.weight",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "input_blocks.3.0.op.weight",
        "middle_block.1.proj_in.weight",
        "output_blocks.2.1.conv.weight",
        "output_blocks.5.2.conv.weight",
        "output_blocks.11.0.skip_connection.weight",
        "out.2.bias",
    ):
        assert key in keys, key


def test_bad_inputs_name_the_problem():
    model = UNetModel(TINY_UNET)
    ctx = torch.randn(1, 5, 32)
    with pytest.raises(ValueError, match="multiple of 2"):
        model(torch.randn(1, 4, 7, 8), 1.0, ctx)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        model(torch.randn(1, 3, 8, 8), 1.0, ctx)
    with pytest.raises(ValueError, match="context must be"):
        model(torch.randn(1, 4, 8, 8), 1.0, torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match="exactly one of num_heads"):
        UNetConfig(num_heads=8, head_dim=64)
    with pytest.raises(ValueError, match="norm_groups"):
        UNetConfig(model_channels=20, norm_groups=32)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(1)
    model = UNetModel(TINY_UNET).train()
    x, ctx, t = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 32), torch.tensor([5.0, 900.0])

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        model(x, t, ctx).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.gradient_checkpointing = True
    checked = grads()
    for a, b in zip(plain, checked):
        torch.testing.assert_close(a, b)
    assert any(g.abs().sum() > 0 for g in plain)


@pytest.mark.parametrize("upcast", [True, False])
def test_fp16_model_upcasts_attention_when_asked(monkeypatch, upcast):
    import t2i_kernels

    torch.manual_seed(0)
    model = UNetModel(attrs.evolve(TINY_UNET_SD2, upcast_attention=upcast)).eval()
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 32)
    with torch.no_grad():
        expected = model(x, 10.0, ctx)
    seen: list[torch.dtype] = []
    real = t2i_kernels.attention

    def spy(q, k, v, **kw):
        seen.append(q.dtype)
        return real(q, k, v, **kw)

    monkeypatch.setattr(t2i_kernels, "attention", spy)
    with torch.no_grad():
        got = model.half()(x.half(), 10.0, ctx.half())
    assert got.dtype == torch.float16
    assert set(seen) == {torch.float32 if upcast else torch.float16}
    assert _rel(got.float(), expected) < 1e-2  # fp16 round-off only


def _pool_reference(pool, context: torch.Tensor) -> torch.Tensor:
    """ContextPooling in float64 through torch's multi-head attention (an independent path)."""
    pool = pool.double()
    x = pool.norm(context.double())
    query = (x.mean(dim=1) + pool.query)[:, None]  # (B, 1, C)
    c = x.shape[-1]
    mha = torch.nn.MultiheadAttention(c, pool.heads, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([pool.to_q.weight, pool.to_kv.weight]))
        mha.in_proj_bias.copy_(torch.cat([pool.to_q.bias, pool.to_kv.bias]))
        mha.out_proj.weight.copy_(torch.eye(c, dtype=torch.float64))
        mha.out_proj.bias.zero_()
    pooled, _ = mha(query, x, x, need_weights=False)
    return pool.out(pooled[:, 0])


def test_context_pooling_starts_neutral_and_matches_multihead_attention():
    torch.manual_seed(int(torch.randint(0, 2**31, ()).item()))
    config = attrs.evolve(TINY_UNET, context_pooling_heads=4)
    pooled_model, plain = UNetModel(config).eval(), UNetModel(TINY_UNET).eval()
    missing, unexpected = pooled_model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("context_pool.") for k in missing)
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 700])
    context = torch.randn(2, 7, TINY_UNET.context_dim)
    with torch.no_grad():  # zero-initialised output layer: a trained UNet gains it unchanged
        assert torch.equal(pooled_model(x, t, context), plain(x, t, context))
        for p in pooled_model.context_pool.parameters():
            p.normal_(0, 0.3)
        assert not torch.allclose(pooled_model(x, t, context), plain(x, t, context), atol=1e-3)
        ours = pooled_model.context_pool(context)
        reference = _pool_reference(pooled_model.context_pool, context)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5)


def test_context_pooling_heads_must_divide_the_context():
    with pytest.raises(ValueError, match="context_pooling_heads=3 does not divide"):
        attrs.evolve(TINY_UNET, context_pooling_heads=3)


def test_upcast_attention_upcasts_only_where_the_kernel_would_overflow():
    from t2i_ldm.layers import needs_upcast

    half = torch.randn(1, 2, 4, 8).half()
    assert needs_upcast(half)  # the CPU's math path forms q k^T in fp16
    assert not needs_upcast(half.float())
