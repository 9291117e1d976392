"""The fast path's switch, on the toy plugin: ``Engine.build(..., compile=True)`` and
``t2i generate --compile`` compile the denoiser's and decoder's modules in place (Dynamo's
``eager`` backend here: no code generation, so CI stays fast), the images stay the same, the
first call logs ``compile_warmup``, and Inductor's caches default to t2i's cache folder."""

from __future__ import annotations

import os

import pytest
import structlog
import structlog.testing
import torch
from click.testing import CliRunner

from t2i import Engine
from t2i.engine import (
    COMPILE_BACKEND_ENV,
    EngineError,
    cache_dir,
    compile_component,
    held_modules,
)


@pytest.fixture
def info_logs():
    """structlog at level info (the default set-up filters below warning), captured."""
    from t2i.logs import configure_logging

    before = structlog.get_config()
    configure_logging("info")
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**before)


@pytest.fixture
def eager_compile(monkeypatch, tmp_path):
    """Dynamo on its ``eager`` backend, a fresh compile cache, t2i's cache under tmp_path."""
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "eager")
    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "unset")  # so that the next line is undone
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    torch._dynamo.reset()
    yield tmp_path
    torch._dynamo.reset()


def test_compile_true_gives_the_same_images_and_logs_the_warmup(
    t2i_manager, eager_compile, info_logs
):
    plain = Engine.build("toy-diffusion")("a red cube", seed=5, steps=2)
    logs = info_logs
    pipe = Engine.build("toy-diffusion", compile=True)
    fast = pipe("a red cube", seed=5, steps=2)
    assert fast.images[0].tobytes() == plain.images[0].tobytes()
    enabled = [e for e in logs if e["event"] == "compile_enabled"]
    assert enabled and enabled[0]["backend"] == "eager"
    assert enabled[0]["modules"] == ["ToyDenoiser.forward"]  # the toy decoder holds no module
    warm = [e for e in logs if e["event"] == "compile_warmup"]
    assert warm and all(e["seconds"] >= 0 for e in warm)
    assert len({e["module"] for e in warm}) == len(warm)  # logged once per compiled call
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache_dir() / "inductor")
    assert str(eager_compile / "cache") in os.environ["TORCHINDUCTOR_CACHE_DIR"]


def test_compile_keeps_parameter_names(t2i_manager, eager_compile):
    class Holder:
        def __init__(self):
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 3))

    holder = Holder()
    keys = list(holder.net.state_dict())
    assert compile_component(holder, backend="eager") == ["net.forward"]
    assert list(holder.net.state_dict()) == keys  # no _orig_mod. prefix
    x = torch.randn(2, 3)
    torch.testing.assert_close(holder.net(x), holder.net._call_impl(x))


def test_held_modules_looks_through_plain_objects_once():
    class Predictor:
        def __init__(self, net):
            self.net = net

        def __call__(self, x):
            return self.net(x)

    class Component:
        def __init__(self):
            self.unet = torch.nn.Linear(2, 2)
            self.predictor = Predictor(self.unet)
            self.extra = [torch.nn.Conv2d(1, 1, 1)]
            self.table = torch.zeros(3)

    found = held_modules(Component())
    assert list(found) == ["unet", "extra.0"]
    module = torch.nn.Linear(1, 1)
    assert held_modules(module) == {"": module}


def test_compiled_calls_run_eager_on_fake_tensors(t2i_manager, eager_compile):
    # t2i.memory's dry run calls the model on fake tensors; that must not compile a graph.
    from torch._subclasses.fake_tensor import FakeTensorMode

    net = torch.nn.Linear(4, 4)
    compile_component(net, backend="eager")
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = net(torch.empty(2, 4))
    assert out.shape == (2, 4)
    assert net._compiled_call_impl.warm is False  # the compiled call was not used


def test_compile_refuses_another_runtime(t2i_manager):
    with pytest.raises(EngineError, match="compile=True"):
        Engine.build("toy-diffusion", runtime="onnx", compile=True)


def test_cli_generate_compile(t2i_manager, eager_compile):
    from t2i.cli.main import cli

    out_dir = eager_compile / "out"
    args = ["generate", "a cat", "--recipe", "toy-diffusion", "--steps", "2", "--seed", "3"]
    plain = CliRunner().invoke(cli, [*args, "--output", str(out_dir / "plain")])
    fast = CliRunner().invoke(cli, [*args, "--compile", "--output", str(out_dir / "fast")])
    assert plain.exit_code == 0, plain.output
    assert fast.exit_code == 0, fast.output
    from PIL import Image

    (a,) = (out_dir / "plain").glob("*.png")
    (b,) = (out_dir / "fast").glob("*.png")
    assert Image.open(a).tobytes() == Image.open(b).tobytes()


def test_token_predictors_stay_eager(t2i_manager, eager_compile):
    # a KV-cached token loop gives every call a new shape: compiling it would only recompile
    pipe = Engine.build("toy-autoregressive")
    assert pipe.compile() == []
    assert Engine.build("toy-gan").compile() == ["TinyGenerator.forward"]
