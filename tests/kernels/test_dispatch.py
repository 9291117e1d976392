"""Backend choice: env var, context manager, CPU/export fallbacks, errors, import without triton."""

import subprocess
import sys

import pytest
import torch

import t2i_kernels
from t2i_kernels import (
    InvalidKernelBackendError,
    KernelUnsupportedError,
    active_backend,
    attention,
    attention_ref,
    group_norm,
    group_norm_ref,
    use_kernels,
)
from t2i_kernels.dispatch import choose_backend


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("T2I_KERNELS", raising=False)


def test_default_is_auto_and_auto_uses_reference_on_cpu():
    assert active_backend() == "auto"
    assert choose_backend("attention", [torch.zeros(1)], None) == "ref"


@pytest.mark.parametrize("value, expected", [("ref", "ref"), ("off", "ref"), ("TRITON", "triton")])
def test_env_var_selects_backend(monkeypatch, value, expected):
    monkeypatch.setenv("T2I_KERNELS", value)
    assert active_backend() == expected


def test_bad_env_var_names_the_choices(monkeypatch):
    monkeypatch.setenv("T2I_KERNELS", "cuda")
    with pytest.raises(InvalidKernelBackendError, match="auto, triton, ref"):
        active_backend()


def test_context_manager_overrides_env_nests_and_restores(monkeypatch):
    monkeypatch.setenv("T2I_KERNELS", "triton")
    with use_kernels("ref"):
        assert active_backend() == "ref"
        with use_kernels("auto"):
            assert active_backend() == "auto"
        assert active_backend() == "ref"
    assert active_backend() == "triton"
    with pytest.raises(InvalidKernelBackendError):
        with use_kernels("fast"):
            pass


def test_ref_backend_never_touches_triton(monkeypatch):
    x = torch.randn(2, 8, 3, 3)
    with use_kernels("ref"):
        assert choose_backend("group_norm", [x], "anything") == "ref"
        torch.testing.assert_close(group_norm(x, 4), group_norm_ref(x, 4))


def test_forced_triton_on_cpu_without_interpreter_explains(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.randn(1, 1, 4, 8)
    with use_kernels("triton"), pytest.raises(KernelUnsupportedError, match="CUDA"):
        attention(q, q, q)


def test_forced_triton_names_the_unsupported_reason(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with use_kernels("triton"), pytest.raises(KernelUnsupportedError, match="head dim 300"):
        q = torch.randn(1, 1, 4, 300)
        attention(q, q, q)


def test_onnx_export_flag_forces_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    x = torch.randn(1, 4, 3, 3)
    with use_kernels("auto"):
        assert choose_backend("group_norm", [x], None) == "ref"
    with use_kernels("triton"), pytest.raises(KernelUnsupportedError, match="ONNX"):
        group_norm(x, 2)


def test_jit_trace_uses_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, x = torch.randn(1, 2, 5, 8), torch.randn(1, 4, 3, 3)

    def fn(q, x):
        return attention(q, q, q), group_norm(x, 2, activation="silu")

    traced = torch.jit.trace(fn, (q, x), check_trace=False)
    out_q, out_x = traced(q, x)
    torch.testing.assert_close(out_q, attention_ref(q, q, q))
    torch.testing.assert_close(out_x, group_norm_ref(x, 2, activation="silu"))
    with use_kernels("triton"), pytest.raises(KernelUnsupportedError, match=r"jit\.trace"):
        torch.jit.trace(fn, (q, x))


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")

    class Block(torch.nn.Module):
        def forward(self, x, mask):
            h = group_norm(x, 2, activation="silu")  # (1, 4, 3, 3)
            seq = h.flatten(2).transpose(1, 2).unsqueeze(1)  # (1, 1, 9, 4)
            return attention(seq, seq, seq, attn_mask=mask)

    x, mask = torch.randn(1, 4, 3, 3), torch.ones(1, 1, 1, 9, dtype=torch.bool)
    path = tmp_path / "block.onnx"
    torch.onnx.export(Block(), (x, mask), str(path), dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), (x, mask))}
    (got,) = session.run(None, feeds)
    torch.testing.assert_close(torch.from_numpy(got), Block()(x, mask), atol=1e-5, rtol=1e-5)


def test_import_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, t2i_kernels\n"
        "q = torch.randn(1, 2, 5, 8)\n"
        "out, ref = t2i_kernels.attention(q, q, q), t2i_kernels.attention_ref(q, q, q)\n"
        "assert torch.allclose(out, ref)\n"
        "try:\n"
        "    with t2i_kernels.use_kernels('triton'):\n"
        "        t2i_kernels.group_norm(torch.randn(1, 4, 2, 2), 2)\n"
        "except t2i_kernels.KernelUnsupportedError as e:\n"
        "    assert 'not installed' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('forced triton without triton did not raise')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_package_exports():
    for name in ("attention", "attention_ref", "group_norm", "group_norm_ref", "use_kernels"):
        assert callable(getattr(t2i_kernels, name))
    assert callable(t2i_kernels.active_backend)


def test_auto_keeps_pytorch_where_triton_was_measured_slower(monkeypatch):
    """Under auto, the measured eager-mode losers (small GroupNorms, attention) stay on PyTorch."""
    import importlib
    from types import SimpleNamespace

    dispatch = importlib.import_module("t2i_kernels.dispatch")
    gn = importlib.import_module("t2i_kernels.group_norm")
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    small = torch.empty(2, 320, 8, 8)
    big = torch.empty(1, 1, 1, gn.EAGER_MIN_ELEMENTS)
    cuda = [SimpleNamespace(device=torch.device("cuda"))]  # stands in for CUDA tensors
    with use_kernels("auto"):
        assert choose_backend("gn", cuda, None, lambda: gn._eager_unprofitable(small)) == "ref"
        assert choose_backend("gn", cuda, None, lambda: gn._eager_unprofitable(big)) == "triton"
        assert choose_backend("attention", cuda, None, lambda: "slower") == "ref"
    with use_kernels("triton"):  # forcing still runs Triton
        assert choose_backend("gn", cuda, None, lambda: gn._eager_unprofitable(small)) == "triton"


def test_importing_the_kernels_does_not_import_dynamo_and_the_constant_mark_holds():
    """The dispatch marks its trace-time state constant for Dynamo by the attribute
    `torch._dynamo.assume_constant_result` sets, so that importing t2i_kernels (every `t2i`
    command does) does not pay for importing torch._dynamo."""
    code = "import sys, t2i_kernels; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    import torch._dynamo

    from t2i_kernels import dispatch

    def probe():
        return 1

    marked = torch._dynamo.assume_constant_result(probe)
    assert vars(marked) == {"_dynamo_marked_constant": True}
    assert dispatch._trace_time_state._dynamo_marked_constant is True
