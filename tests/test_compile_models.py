"""Compile-clean models (issue 18.1): every family's networks run under
``torch.compile(fullgraph=True)`` as one graph -- no graph break, no recompile across the calls
of a generation (new latents, new timesteps, new seeds, same shapes) -- and give eager's
numbers.

CPU: Dynamo with the ``eager`` backend (what breaks or recompiles is Dynamo's business, and no
code is generated, so it stays fast); ``aot_eager`` (AOT autograd traces the graph again, the
kernels' fake implementations included) for the SD UNet, the DALL-E decode step (its in-place
cache writes, functionalized) and the Triton kernels traced into the graph as
``torch.library`` custom ops. GPU (``-m gpu``): Inductor with the Triton kernels.

The DALL-E transformer: its teacher-forcing ``forward`` (the bounds of ``embed_image`` are
checked on Python ints, the layers' masks are buffers), and its static-cache ``decode`` (the
sampling step of ``DalleTokenPredictor.compile_token_loop``: keys / values preallocated to
the sequence length, written in place at a tensor position, attention over the whole length
with the mask of the written positions) over several steps of two seeds, one graph for every
position. The growing-cache ``step`` (the eager default, and the ONNX export's layout) changes
shape every token and stays eager.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend
from torch._dynamo.utils import counters

import t2i_kernels

CUDA = torch.cuda.is_available()


class Recorder:
    """A ``torch.compile`` backend that keeps each graph Dynamo hands it, then delegates."""

    def __init__(self, backend: str) -> None:
        self.backend = lookup_backend(backend)
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs.append(gm)
        return self.backend(gm, example_inputs)

    def ops(self) -> set[str]:
        return {
            str(n.target) for gm in self.graphs for n in gm.graph.nodes if n.op == "call_function"
        }


def compile_clean(fn: Callable, calls: list[tuple], *, backend: str = "eager", **tol):
    """Run ``fn`` compiled (fullgraph) on each argument tuple of ``calls`` and eagerly; assert
    one graph, no graph break, no recompile, and eager's outputs. Returns the Recorder."""
    torch._dynamo.reset()
    counters.clear()
    recorder = Recorder(backend)
    compiled = torch.compile(fn, backend=recorder, fullgraph=True)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        for args in calls:
            got = compiled(*args)
            torch.testing.assert_close(got, fn(*args), **tol)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert len(recorder.graphs) == 1, f"{len(recorder.graphs)} graphs: a recompile"
    return recorder


def _random(module: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():  # no zero-initialised output layer: every path is live
            p.normal_(0.0, std)
    return module.eval()


def _steps(make: Callable[[int, float], tuple], device="cpu") -> list[tuple]:
    """Three calls as three sampling steps / seeds make them: new inputs, one shape."""
    out = []
    for seed, t in ((1, 999.0), (2, 500.0), (3, 3.0)):
        torch.manual_seed(seed)
        out.append(tuple(a.to(device) if torch.is_tensor(a) else a for a in make(seed, t)))
    return out


# -- the models, on tiny configurations ------------------------------------------------------


def _ldm_unet(config_name: str, device="cpu"):
    from t2i_ldm import config
    from t2i_ldm.unet import UNetModel

    cfg = getattr(config, config_name)
    unet = _random(UNetModel(cfg)).to(device)
    make = lambda s, t: (  # noqa: E731
        torch.randn(2, 4, 16, 16),
        torch.full((2,), t),
        torch.randn(2, 7, cfg.context_dim),
    )
    return unet, _steps(make, device)


def _ldm_vae_decode(device="cpu"):
    from t2i_ldm.config import TINY_VAE
    from t2i_ldm.vae import AutoencoderKL

    vae = _random(AutoencoderKL(TINY_VAE)).to(device)
    return vae.decode, _steps(lambda s, t: (torch.randn(1, 4, 8, 8),), device)


def _ldm_vae_encode(device="cpu"):
    from t2i_ldm.config import TINY_VAE
    from t2i_ldm.vae import AutoencoderKL

    vae = _random(AutoencoderKL(TINY_VAE)).to(device)
    return (lambda x: vae.encode(x).mode()), _steps(
        lambda s, t: (torch.rand(1, 3, 16, 16) * 2 - 1,), device
    )


def _clip_text(device="cpu"):
    from t2i_ldm.clip_text import ClipTextConfig, ClipTextModel

    cfg = ClipTextConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, bos_token_id=98, eos_token_id=99,
        pad_token_id=99,
    )  # fmt: skip
    clip = _random(ClipTextModel(cfg), 0.05).to(device)

    def run(ids):
        out = clip(ids, output_hidden_states=True)
        return out.last_hidden_state, out.pooler_output, out.hidden_states[-2]

    def make(seed, t):
        ids = torch.randint(0, 98, (2, 77))
        ids[:, 0], ids[:, 5 + seed :] = 98, 99  # start, prompt, end + padding
        return (ids,)

    return run, _steps(make, device)


def _imagen_efficient(preset: str, device="cpu"):
    from t2i_imagen import presets
    from t2i_imagen.efficient_unet import EfficientUNet

    cfg = getattr(presets, preset)
    unet = _random(EfficientUNet(cfg), 0.05).to(device)

    def make(seed, t):
        mask = torch.ones(2, 5, dtype=torch.bool)
        mask[:, -seed:] = False
        level = torch.full((2,), 0.1 * seed) if cfg.noise_conditioning else None
        text, pooled = torch.randn(2, 5, cfg.text_dim), torch.randn(2, cfg.pooled_dim)
        return (torch.randn(2, cfg.in_channels, 16, 16), torch.full((2,), t), text, mask,
                pooled, level)  # fmt: skip

    return unet, _steps(make, device)


def _imagen_if(stage: str, device="cpu"):
    sys.path.insert(0, str(Path(__file__).parent / "plugins" / "imagen"))
    try:
        import if_fixtures
    finally:
        sys.path.pop(0)
    from t2i_imagen.if_unet import IFUNet, IFUNetConfig

    cfg = IFUNetConfig.from_diffusers(getattr(if_fixtures, stage))
    unet = _random(IFUNet(cfg), 0.05).to(device)

    def make(seed, t):
        level = torch.full((2,), 10.0 * seed) if cfg.class_embed_type else None
        return (torch.randn(2, cfg.in_channels, 16, 16), torch.full((2,), t),
                torch.randn(2, 5, cfg.encoder_hid_dim), level)  # fmt: skip

    return unet, _steps(make, device)


def _gan_generator(device="cpu"):
    from t2i_gan.models import GanConfig, NetG

    net = _random(NetG(GanConfig(nf=2, z_dim=8, cond_dim=6, image_size=32))).to(device)
    return net, _steps(lambda s, t: (torch.randn(2, 8), torch.randn(2, 6)), device)


def _dalle_transformer(device="cpu"):
    from t2i_dalle.transformer import DalleTransformer, TransformerConfig

    cfg = TransformerConfig(
        text_vocab=11, text_len=5, image_vocab=13, grid=4, width=32, depth=4, heads=2,
        attn_types=("full", "row", "column", "conv"), conv_kernel=3,
    )  # fmt: skip
    return _random(DalleTransformer(cfg)).to(device)


def _dalle_forward(device="cpu"):
    model = _dalle_transformer(device)
    n = model.config.image_len
    make = lambda s, t: (torch.randint(0, 11, (2, 5)), torch.randint(0, 13, (2, n)))  # noqa: E731
    return model, _steps(make, device)


def _dalle_decode(device="cpu"):
    """Three decode steps of each of two seeds, each seed with its own static cache (prefilled
    eagerly here; each call writes its position, which the next call reads)."""
    model = _dalle_transformer(device)
    calls = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        cache = model.new_cache(2)
        text = torch.randint(0, 11, (2, 5), device=device)
        bos = torch.full((2, 1), model.image_bos, device=device)
        with torch.no_grad():
            model.step(bos, model.embed_text(text), cache)
        for _ in range(3):
            positions = cache.positions(1)
            cache.advance(1)
            calls.append((torch.randint(0, 13, (2, 1), device=device), positions, cache))
    return model.decode, calls


FAMILIES = {"ldm": "t2i_ldm", "imagen": "t2i_imagen", "gan": "t2i_gan", "dalle": "t2i_dalle"}

MODELS: dict[str, Callable] = {
    "ldm-unet-sd1": lambda **kw: _ldm_unet("TINY_UNET", **kw),
    "ldm-unet-sd2": lambda **kw: _ldm_unet("TINY_UNET_SD2", **kw),
    "ldm-vae-decode": _ldm_vae_decode,
    "ldm-vae-encode": _ldm_vae_encode,
    "ldm-clip-text": _clip_text,
    "imagen-efficient-base": lambda **kw: _imagen_efficient("TINY_BASE", **kw),
    "imagen-efficient-sr": lambda **kw: _imagen_efficient("TINY_SR", **kw),
    "imagen-if-stage1": lambda **kw: _imagen_if("TINY_STAGE_I", **kw),
    "imagen-if-stage2": lambda **kw: _imagen_if("TINY_STAGE_II", **kw),
    "gan-generator": _gan_generator,
    "dalle-forward": _dalle_forward,
    "dalle-decode": _dalle_decode,
}


AOT_EAGER = ("ldm-unet-sd1", "dalle-decode")
"""Traced again by AOT autograd on the CPU: the SD UNet, and the in-place cache writes."""


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_compiles_to_one_graph_without_recompiles(name):
    pytest.importorskip(FAMILIES[name.split("-")[0]])
    fn, calls = MODELS[name]()
    with t2i_kernels.use_kernels("ref"):
        recorder = compile_clean(fn, calls, backend="aot_eager" if name in AOT_EAGER else "eager")
    assert not [op for op in recorder.ops() if op.startswith("t2i.")]  # the backend traced: ref


# -- the Triton kernels inside the graph -----------------------------------------------------


@pytest.fixture
def triton_traced(monkeypatch):
    """``use_kernels("triton")`` on CPU tensors with the launchers replaced by the references,
    so that the custom ops ``t2i::group_norm`` / ``t2i::attention`` are what Dynamo traces
    (their fake implementations give the shapes) without running Triton's interpreter."""
    pytest.importorskip("triton")
    import importlib

    import torch.nn.functional as F

    # (the package's names `attention` / `group_norm` are the functions, not the modules)
    attention_module = importlib.import_module("t2i_kernels.attention")
    group_norm_module = importlib.import_module("t2i_kernels.group_norm")

    def group_norm_launcher(x, weight, bias, num_groups, eps, activation):
        act = None if activation == "none" else activation
        y = group_norm_module.group_norm_ref(x, num_groups, weight, bias, eps, activation=act)
        stats = torch.zeros(x.shape[0], num_groups, device=x.device)
        return y, stats, stats.clone()

    def attention_launcher(q, k, v, bias, causal, scale):
        mask = None if bias is None else bias[:, :, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
        return out, torch.zeros(q.shape[:3], device=q.device)

    monkeypatch.setattr(group_norm_module, "_group_norm_forward_triton", group_norm_launcher)
    monkeypatch.setattr(attention_module, "_attention_forward_triton", attention_launcher)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the dispatch's CPU rule; nothing is launched
    with t2i_kernels.use_kernels("triton"):
        yield


@pytest.mark.skipif(CUDA, reason="the GPU test runs the real kernels")
@pytest.mark.parametrize("name", ["ldm-unet-sd1", "ldm-vae-decode"])
def test_triton_kernels_are_custom_ops_inside_the_graph(triton_traced, name):
    pytest.importorskip("t2i_ldm")
    fn, calls = MODELS[name]()
    recorder = compile_clean(fn, calls, backend="aot_eager", atol=1e-5, rtol=1e-5)
    ops = recorder.ops()
    assert "t2i.group_norm.default" in ops and "t2i.attention.default" in ops, sorted(ops)


@pytest.mark.skipif(CUDA, reason="the GPU test runs the real kernels")
def test_dalle_decode_attends_through_the_triton_custom_op(triton_traced):
    # one query over the static cache with a (1, max_len) mask: the kernel's key-padding case
    pytest.importorskip("t2i_dalle")
    with t2i_kernels.use_kernels("ref"):  # the eager prefill's (S, max_len) mask: not the kernel's
        fn, calls = MODELS["dalle-decode"]()
    recorder = compile_clean(fn, calls, backend="aot_eager", atol=1e-5, rtol=1e-5)
    assert "t2i.attention.default" in recorder.ops(), sorted(recorder.ops())


# -- the engine's fast path on the embedded default ------------------------------------------


@pytest.mark.slow  # about 10 s of CPU time: two pipelines, three images each
def test_ldm_shapes_compiled_pipeline_has_one_graph_per_call(monkeypatch, tmp_path):
    """``Engine.build("ldm-shapes", compile=True)``: the UNet's forward and the VAE's decode
    are each one graph for three seeds of the same size, and the images equal eager's."""
    pytest.importorskip("t2i_ldm")
    import t2i_ldm.plugin
    from t2i import Engine
    from t2i.testing import make_manager

    monkeypatch.setenv("T2I_COMPILE_BACKEND", "eager")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    manager = make_manager(t2i_ldm.plugin)
    torch._dynamo.reset()
    counters.clear()
    fast = Engine.build("ldm-shapes", plugins=manager, compile=True)
    plain = Engine.build("ldm-shapes", plugins=manager)
    for seed in (1, 2, 3):
        a = fast("a large red circle on the left", seed=seed, steps=2)
        b = plain("a large red circle on the left", seed=seed, steps=2)
        assert a.images[0].tobytes() == b.images[0].tobytes(), seed
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 2  # unet.forward, vae.decode; no recompile
    torch._dynamo.reset()


# -- GPU: Inductor and the Triton kernels ----------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_compiles_with_inductor_and_triton_kernels_on_gpu(name):
    pytest.importorskip("triton")
    pytest.importorskip(FAMILIES[name.split("-")[0]])
    fn, calls = MODELS[name](device="cuda")
    with t2i_kernels.use_kernels("triton" if name.startswith("ldm-unet") else "auto"):
        recorder = compile_clean(fn, calls, backend="inductor", atol=2e-3, rtol=2e-3)
    if name.startswith("ldm-unet"):
        ops = recorder.ops()
        assert "t2i.group_norm.default" in ops and "t2i.attention.default" in ops, sorted(ops)


def test_compiled_runs_stay_in_one_cache_folder_when_asked(monkeypatch, tmp_path):
    """``t2i.engine.use_compile_cache`` keeps a folder the user chose."""
    from t2i.engine import use_compile_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_compile_cache() == str(tmp_path / "mine")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
