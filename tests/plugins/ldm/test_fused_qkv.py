"""Fused q/k/v projections of the SD UNet (``UNetModel.fuse_projections``, the fast path's
lossless step): the same outputs as three matmuls, the same state dict, idempotent and
reversible, never stale after a LoRA merge, refused when a LoRA wrapper adapts a projection,
and called by ``t2i.engine.compile_component(fuse=True)``."""

from __future__ import annotations

import copy

import attrs
import pytest
import torch
from torch import nn

from t2i.engine import compile_component
from t2i.lora import LoraLayer, merge_lora
from t2i_ldm.config import TINY_UNET
from t2i_ldm.unet import CrossAttention, UNetModel


def _unet(context_dim: int = 32, seed: int = 0) -> UNetModel:
    """The tiny SD1 UNet on random weights; context width 32 = the first level's width (every
    attention fuses q|k|v), 24 (cross-attention fuses k|v only)."""
    torch.manual_seed(seed)
    unet = UNetModel(attrs.evolve(TINY_UNET, context_dim=context_dim)).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.1)
    return unet


def _inputs(unet: UNetModel, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    t = torch.rand(2, generator=gen) * 1000
    context = torch.randn(2, 7, unet.config.context_dim, generator=gen)
    return x, t, context


def _attentions(unet: UNetModel) -> list[CrossAttention]:
    return [m for m in unet.modules() if isinstance(m, CrossAttention)]


@pytest.mark.parametrize("context_dim", [32, 24])
def test_fused_equals_unfused(context_dim):
    unet = _unet(context_dim)
    inputs = _inputs(unet)
    with torch.inference_mode():
        plain = unet(*inputs)
        assert unet.fuse_projections() == len(_attentions(unet)) == 8
        fused = unet(*inputs)
        fresh = _inputs(unet, seed=2)  # fresh inputs: no cached result
        fused2 = unet(*fresh)
        unet.unfuse_projections()
        plain2 = unet(*fresh)
    assert all(m.fused_proj is None for m in _attentions(unet))  # unfused: buffers dropped
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(fused2, plain2, rtol=0, atol=1e-6)


def test_fusion_rows_qkv_for_self_and_kv_for_narrow_context():
    unet = _unet(24)
    unet.fuse_projections()
    rows = {m.fused_proj.shape[0] // m.to_q.out_features for m in _attentions(unet)}
    assert rows == {2, 3}  # attn1: q|k|v; attn2 over a 24-wide context: k|v
    for m in _attentions(unet):
        parts = (m.to_q, m.to_k, m.to_v)[-(m.fused_proj.shape[0] // m.to_q.out_features) :]
        assert torch.equal(m.fused_proj, torch.cat([p.weight for p in parts]))


def test_state_dict_unchanged_and_idempotent():
    unet = _unet()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    unet.fuse_projections()
    buffers = [m.fused_proj for m in _attentions(unet)]
    assert unet.fuse_projections() == 8  # idempotent: nothing re-made
    assert all(a is m.fused_proj for a, m in zip(buffers, _attentions(unet)))
    after = unet.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not any("fused" in name for name, _ in unet.named_parameters())
    unet.load_state_dict(before)  # strict: the fused buffers are not expected keys
    assert unet.unfuse_projections() == 8 and unet.unfuse_projections() == 0


def _lora(unet: UNetModel, rank: int = 2) -> dict[str, LoraLayer]:
    gen = torch.Generator().manual_seed(9)
    layers = {}
    for name, m in unet.named_modules():
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v"):
            down = torch.randn(rank, m.in_features, generator=gen) * 0.3
            layers[name] = LoraLayer(down, torch.randn(m.out_features, rank, generator=gen))
    return layers


@pytest.mark.parametrize("copied", [False, True], ids=["in_place", "deepcopy"])
def test_a_merged_lora_is_not_stale(copied):
    # adapt_component (a per-prompt LoRA) deep-copies the fused model, then merges in place
    unet, reference = _unet(24), _unet(24)
    lora = _lora(unet)
    merge_lora(reference, lora, 0.7)
    unet.fuse_projections()
    inputs = _inputs(unet)
    with torch.inference_mode():
        unet(*inputs)  # fused and used
    target = copy.deepcopy(unet) if copied else unet
    merge_lora(target, lora, 0.7)
    with torch.inference_mode():
        out, want = target(*inputs), reference(*inputs)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)
    m = _attentions(target)[0]
    assert m.fused_proj is not None  # re-fused from the merged weights, not dropped
    assert torch.equal(m.fused_proj[: m.to_q.out_features], m.to_q.weight)


class _Adapted(nn.Module):
    """A LoRA wrapper as peft injects one: the base layer plus ``up @ down``."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base_layer = base
        self.down = nn.Linear(base.in_features, 2, bias=False)
        self.up = nn.Linear(2, base.out_features, bias=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.up(self.down(x))


def test_wrapped_projections_refuse_fusion_and_run_through_the_wrapper():
    unet = _unet()
    inputs = _inputs(unet)
    unet.fuse_projections()
    first = _attentions(unet)[0]
    first.to_v = _Adapted(first.to_v)  # wrapped after fusion
    with torch.inference_mode():
        out = unet(*inputs)
        unet.unfuse_projections()
        want = unet(*inputs)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)
    assert unet.fuse_projections() == 7  # the wrapped attention refuses
    assert first.fused_proj is None


def test_training_runs_unfused_so_gradients_reach_the_projections():
    unet, reference = _unet(), _unet()
    unet.fuse_projections()
    inputs = _inputs(unet)
    unet(*inputs).square().mean().backward()
    reference(*inputs).square().mean().backward()
    for m, r in zip(_attentions(unet), _attentions(reference)):
        assert m.to_k.weight.grad is not None
        torch.testing.assert_close(m.to_k.weight.grad, r.to_k.weight.grad)


def test_compile_component_fuses_when_asked():
    from t2i_ldm.denoiser import LdmDenoiser

    torch._dynamo.reset()
    unet = _unet(24)
    inputs = _inputs(unet)
    with torch.inference_mode():
        plain = unet(*inputs)
    denoiser = LdmDenoiser(unet)
    assert compile_component(denoiser, backend="eager", fuse=True) == ["model.unet.forward"]
    assert all(m.fused_proj is not None for m in _attentions(unet))
    with torch.inference_mode():
        compiled = unet(*inputs)  # Dynamo traces the fused path
    torch.testing.assert_close(compiled, plain, rtol=0, atol=1e-6)
    other = _unet()
    compile_component(other, backend="eager")  # fuse defaults off
    assert all(m.fused_proj is None for m in _attentions(other))
    torch._dynamo.reset()
