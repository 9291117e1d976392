"""FP8 (E4M3) linears (``t2i.fp8``) and the engine's opt-in switch (``fp8=True``, ``--fp8``).

The error bound: E4M3 keeps 3 mantissa bits, so rounding one operand element is off by at most
2^-4 = 6.25 % of it (about 3.6 % rms for uniformly spread mantissas); both operands are
rounded and a dot product averages K such independent errors, so a matmul output carries a
few percent relative error (measured ~3.5 %), a small UNet about as much. Every test asserts
< 0.1 (room for the worst draws) and > 0.005 (the layer really ran in FP8).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import structlog
import structlog.testing
import torch
from torch import nn

from t2i import Engine
from t2i.engine import EngineError
from t2i.fp8 import FP8, Float8Linear, convert_linears_to_fp8, eligible, fp8_device_problem


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("activation", ["row", "tensor"])
def test_float8_linear_is_quantized_and_close(dtype, activation):
    torch.manual_seed(0)
    linear = nn.Linear(96, 64)
    fp8 = Float8Linear.from_linear(linear, activation=activation).to(dtype)
    x = torch.randn(3, 7, 96)
    with torch.inference_mode():
        out, ref = fp8(x.to(dtype)), linear(x)
    assert out.dtype == dtype and out.shape == (3, 7, 64)
    assert fp8.weight.dtype == FP8 and fp8.weight_scale.dtype == torch.float32  # kept by .to
    assert 0.005 < _rel(out, ref) < 0.1
    weight_error = (fp8.dequantized() - linear.weight).abs() / linear.weight.abs()
    big = linear.weight.detach().abs() > 1e-3
    assert float(weight_error.detach()[big].max()) <= 2**-4 + 1e-6


def test_float8_linear_copies_and_moves():
    fp8 = Float8Linear.from_linear(nn.Linear(32, 16, bias=False))
    assert list(fp8.state_dict()) == ["weight", "weight_scale"] and fp8.bias is None
    clone = copy.deepcopy(fp8).to("cpu").half()
    assert clone.weight.dtype == FP8 and torch.equal(clone.weight_scale, fp8.weight_scale)
    with pytest.raises(ValueError, match="multiples of 16"):
        Float8Linear.from_linear(nn.Linear(24, 16))


def test_eligible_layers_and_skip():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.big = nn.Linear(64, 128)
            self.odd = nn.Linear(64, 120)  # 120 is not a multiple of 16
            self.small = nn.Linear(16, 32)  # narrower than min_features
            self.block = nn.Sequential(nn.Linear(128, 64), nn.GELU(), nn.Linear(64, 64))
            self.conv = nn.Conv2d(64, 64, 1)

    net = Net()
    assert eligible(net.big) and not eligible(net.odd) and not eligible(net.small)
    assert not eligible(net.conv) and not eligible(nn.Linear(8, 8), min_features=0)
    names = convert_linears_to_fp8(net, skip=("block.2",))
    assert names == ["big", "block.0"]
    assert isinstance(net.big, Float8Linear) and isinstance(net.block[0], Float8Linear)
    assert type(net.block[2]) is nn.Linear and type(net.odd) is nn.Linear
    assert convert_linears_to_fp8(net.big) == []  # the root itself is never replaced
    assert convert_linears_to_fp8(net, min_features=16) == ["small", "block.2"]


def _tiny_unet():
    attrs = pytest.importorskip("attrs")
    config = pytest.importorskip("t2i_ldm.config")
    from t2i_ldm.unet import UNetModel

    torch.manual_seed(0)
    unet = UNetModel(attrs.evolve(config.TINY_UNET, context_dim=32)).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.1)
    gen = torch.Generator().manual_seed(1)
    inputs = (
        torch.randn(2, 4, 16, 16, generator=gen),
        torch.tensor([20.0, 700.0]),
        torch.randn(2, 7, 32, generator=gen),
    )
    return unet, inputs


def test_tiny_unet_fp8_error():
    unet, inputs = _tiny_unet()
    with torch.inference_mode():
        ref = unet(*inputs)
        converted = copy.deepcopy(unet)
        names = convert_linears_to_fp8(converted, min_features=32)
        out = converted(*inputs)
        converted.fuse_projections()  # fp8 projections refuse the (full-precision) fusion
        again = converted(*inputs)
    assert any(n.endswith("attn1.to_q") for n in names) and len(names) > 20
    assert 0.005 < _rel(out, ref) < 0.1
    torch.testing.assert_close(again, out, rtol=0, atol=0)


@pytest.fixture
def ldm_manager():
    """The built-ins and the ldm plugin, installed as the process-wide manager (the CLI)."""
    pytest.importorskip("t2i_ldm")
    from t2i.plugins import set_plugin_manager
    from t2i.testing import make_manager
    from t2i_ldm import plugin

    manager = make_manager(plugin)
    previous = set_plugin_manager(manager)
    yield manager
    set_plugin_manager(previous)


@pytest.fixture
def info_logs():
    from t2i.logs import configure_logging

    before = structlog.get_config()
    configure_logging("info")
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**before)


def test_engine_fp8_image_is_close_and_the_cache_untouched(ldm_manager, info_logs):
    # A trajectory compounds each step's error and, for some seeds, flips the composition
    # (seed 2 at 12 steps moves 26/255 on average; a different seed moves 11-230/255): this
    # seed keeps it (0.6/255 measured). Alignment over many seeds: benchmarks/fp8_error.py.
    args = dict(seed=1, steps=6)
    plain = Engine.build("ldm-shapes")("a red cube", **args).images[0]
    fast = Engine.build("ldm-shapes", fp8=True)("a red cube", **args).images[0]
    after = Engine.build("ldm-shapes")("a red cube", **args).images[0]
    (event,) = [e for e in info_logs if e["event"] == "fp8_enabled"]
    assert event["layers"] > 10 and event["kinds"] == ["denoiser"]
    a, b = np.asarray(plain, dtype=float), np.asarray(fast, dtype=float)
    assert 0 < np.abs(a - b).mean() < 3.0  # of 255
    assert after.tobytes() == plain.tobytes()  # the loader's cached UNet was not converted


def test_quantize_fp8_returns_the_converted_layers(ldm_manager):
    pipe = Engine.build("ldm-shapes")
    names = pipe.quantize_fp8(min_features=128, skip=("*.ff.*",))
    assert names and all(n.startswith("model.unet.") for n in names)
    assert not any(".ff." in n for n in names)


def test_fp8_refuses_another_runtime():
    with pytest.raises(EngineError, match="fp8=True"):
        Engine.build("toy-diffusion", runtime="onnx", fp8=True)


def test_fp8_refuses_gpus_before_ada(t2i_manager, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "RTX 3090")
    assert "Ada or Hopper" in fp8_device_problem(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fp8_device_problem(torch.device("cuda")) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    pipe = Engine.build("toy-diffusion")
    pipe.device = torch.device("cuda")
    with pytest.raises(EngineError, match=r"Ada or Hopper.*drop fp8"):
        pipe.quantize_fp8()
    pipe.device = torch.device("mps")
    with pytest.raises(EngineError, match="drop fp8"):
        pipe.quantize_fp8()


def test_cli_generate_fp8(ldm_manager, tmp_path):
    from click.testing import CliRunner

    from t2i.cli.main import cli

    args = ["generate", "a red cube", "--recipe", "ldm-shapes", "--steps", "2", "--fp8"]
    result = CliRunner().invoke(cli, [*args, "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*.png"))) == 1


def test_fp8_composes_with_compile(ldm_manager, monkeypatch, tmp_path):
    from t2i.engine import COMPILE_BACKEND_ENV

    monkeypatch.setenv(COMPILE_BACKEND_ENV, "eager")  # Dynamo traces, no code generation
    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path))
    torch._dynamo.reset()
    eager = Engine.build("ldm-shapes", fp8=True)
    fast = Engine.build("ldm-shapes", fp8=True, compile=True)
    args = dict(seed=1, steps=2)
    assert fast("a red cube", **args).images[0].tobytes() == (
        eager("a red cube", **args).images[0].tobytes()
    )
    torch._dynamo.reset()
