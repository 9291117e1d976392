"""Moving components: a module two components share stays one module's weights once moved."""

from __future__ import annotations

import gc
import weakref

import torch

from t2i.modules import copy_if_moving


class Holder:
    """A component that is not a module: holds one, as a predictor or text encoder does."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7))


def test_two_components_of_one_module_share_the_moved_weights() -> None:
    net = _net()
    first = copy_if_moving(Holder(net), "cpu", torch.float64)
    second = copy_if_moving(Holder(net), "cpu", torch.float64)
    assert first.net is not net and second.net is not net
    for a, b, src in zip(first.net.parameters(), second.net.parameters(), net.parameters()):
        assert a is b and isinstance(a, torch.nn.Parameter)
        assert a.dtype == torch.float64 and src.dtype == torch.float32
        torch.testing.assert_close(a.float(), src)


def test_another_dtype_converts_again_and_the_source_is_untouched() -> None:
    net = _net()
    before = [p.clone() for p in net.parameters()]
    doubles = copy_if_moving(Holder(net), "cpu", torch.float64)
    halves = copy_if_moving(Holder(net), "cpu", torch.bfloat16)
    assert next(doubles.net.parameters()).dtype == torch.float64
    assert next(halves.net.parameters()).dtype == torch.bfloat16
    for p, b in zip(net.parameters(), before):
        assert p.dtype == torch.float32 and torch.equal(p, b)


def test_dropping_the_copies_frees_their_weights_while_the_source_lives() -> None:
    net = _net()
    moved = copy_if_moving(Holder(net), "cpu", torch.float64)
    gone = weakref.ref(next(moved.net.parameters()))
    del moved
    gc.collect()
    assert gone() is None, "the reuse table kept a dropped copy's weights alive"
    again = copy_if_moving(Holder(net), "cpu", torch.float64)
    assert next(again.net.parameters()).dtype == torch.float64


def test_a_component_already_in_place_is_shared_as_it_is() -> None:
    holder = Holder(_net())
    assert copy_if_moving(holder, "cpu", torch.float32) is holder
