"""The memory estimate (``t2i.memory``): a dry run on fake tensors refuses a request that
cannot fit, before anything of its size is allocated, and leaves no fake tensor behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from t2i import Engine, memory
from t2i.graph.errors import NodeExecutionError
from t2i.memory import InsufficientMemoryError, check_fits, dry_run_peak


class LazyTable(nn.Module):
    """A conv with a cache filled on first call (as denoisers cache their sigma tables)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self._tables: dict = {}

    def forward(self, x):
        table = self._tables.setdefault(x.device, torch.ones(16, device=x.device))
        return self.conv(x) * table[:, None, None]


def test_estimate_counts_the_activations():
    model = LazyTable()
    size = int(torch.randint(40, 80, ()))
    small = dry_run_peak(model, ((1, 3, size, size),), torch.float32, torch.device("cpu"))
    large = dry_run_peak(model, ((4, 3, size, size),), torch.float32, torch.device("cpu"))
    output = 16 * size * size * 4  # one (1, 16, size, size) float32 output
    assert output <= small < 4 * output
    assert large == pytest.approx(4 * small, rel=0.1)


def test_dry_run_leaves_no_fake_tensor_in_caches(monkeypatch):
    monkeypatch.setenv(memory.ENV, "always")
    model = LazyTable()
    check_fits("test", model, ((1, 3, 8, 8),), dtype=torch.float32, device=torch.device("cpu"))
    x = torch.randn(1, 3, 8, 8)
    out = model(x)
    assert type(out) is torch.Tensor
    assert torch.allclose(out, model.conv(x))


def test_request_that_cannot_fit_is_refused_before_any_step(t2i_manager, monkeypatch):
    from t2i.testing import toy_plugin

    monkeypatch.setenv(memory.ENV, "always")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1024)
    pipe = Engine.build("toy-diffusion")
    toy_plugin.CALLS.clear()
    with pytest.raises(NodeExecutionError, match=r"needs about .* MiB but cpu has 0.0 MiB") as e:
        pipe("a cat", seed=int(torch.randint(1000, ())), width=32, height=32, steps=3)
    assert isinstance(e.value.__cause__, InsufficientMemoryError)
    assert toy_plugin.CALLS["denoiser"] <= 1  # the dry run's call; no real step ran
    assert toy_plugin.CALLS["decoder"] == 0


def test_never_skips_and_small_inputs_are_not_checked_in_auto(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    model = LazyTable()
    monkeypatch.setenv(memory.ENV, "auto")
    assert check_fits("t", model, ((1, 3, 8, 8),), dtype=torch.float32, device="cpu") is None
    monkeypatch.setenv(memory.ENV, "never")
    big = (1, 3, 256, 256)
    assert check_fits("t", model, (big,), dtype=torch.float32, device="cpu") is None
    monkeypatch.setenv(memory.ENV, "auto")
    with pytest.raises(InsufficientMemoryError, match="lower the size"):
        check_fits("t", model, (big,), dtype=torch.float32, device=torch.device("cpu"))


def test_a_cached_estimate_is_not_reused_for_a_new_owner_with_a_dead_ones_id(monkeypatch):
    """Estimates are cached per owner object: a new object that got the id of a freed one
    (CPython reuses ids) is measured again, not given the dead owner's figure."""
    import gc
    import weakref

    monkeypatch.setenv(memory.ENV, "always")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1024)
    owner, shapes = LazyTable(), ((1, 3, 64, 64),)

    class Gone:
        pass

    dead = Gone()
    stale = weakref.ref(dead)
    del dead
    gc.collect()
    memory._CACHE[(id(owner), shapes, torch.float32, "cpu")] = (stale, 0)  # "fits": stale
    with pytest.raises(InsufficientMemoryError):  # measured anew: it does not fit in 1 KiB
        check_fits("x", owner, shapes, dtype=torch.float32, device=torch.device("cpu"), key=owner)
    assert memory._CACHE[(id(owner), shapes, torch.float32, "cpu")][0]() is owner
