"""The export contract (t2i.contracts.ExportedModule, ExportSpec, Exportable): a module
description that does not fit its own names is refused when it is made, with a message
naming the module and what is wrong."""

from __future__ import annotations

import pytest
import torch

from t2i.contracts import Exportable, ExportedModule, ExportSpec


def _linear_spec(**changes) -> ExportedModule:
    fields = dict(
        name="proj",
        module=torch.nn.Linear(4, 3),
        example_inputs=(torch.randn(2, 4),),
        input_names=("x",),
        output_names=("y",),
        dynamic_axes={"x": {0: "batch_size"}, "y": {0: "batch_size"}},
    )
    fields.update(changes)
    return ExportedModule(**fields)


def test_a_fitting_description_is_kept_as_given():
    m = _linear_spec()
    assert m.module(*m.example_inputs).shape == (2, 3)
    assert m.dynamic_axes == {"x": {0: "batch_size"}, "y": {0: "batch_size"}}
    assert _linear_spec(dynamic_axes={}).dynamic_axes == {}
    assert dict(ExportedModule("p", m.module, m.example_inputs, ("x",), ("y",)).dynamic_axes) == {}


def test_more_example_inputs_than_names_is_refused():
    with pytest.raises(ValueError, match=r"proj: 2 example inputs but 1 input names"):
        _linear_spec(example_inputs=(torch.randn(2, 4), torch.randn(2, 4)))


def test_more_input_names_than_example_inputs_is_refused():
    with pytest.raises(ValueError, match=r"proj: 1 example inputs but 2 input names"):
        _linear_spec(input_names=("x", "mask"))


def test_dynamic_axes_on_unknown_names_are_refused_and_listed():
    with pytest.raises(ValueError, match=r"proj: dynamic axes for unknown .*\['z', 'zz'\]"):
        _linear_spec(dynamic_axes={"x": {0: "batch_size"}, "zz": {0: "b"}, "z": {1: "s"}})


def test_dynamic_axes_may_name_outputs():
    m = _linear_spec(dynamic_axes={"y": {0: "batch_size"}})
    assert set(m.dynamic_axes) == {"y"}


def test_spec_iterates_its_modules_in_order():
    a, b = _linear_spec(name="a"), _linear_spec(name="b")
    spec = ExportSpec((a, b))
    assert [m.name for m in spec] == ["a", "b"]
    assert spec.module_list() == [a.module, b.module]


def test_exportable_is_having_export_spec():
    class Holder:
        def __init__(self) -> None:
            self.proj = torch.nn.Linear(4, 3)

        def export_spec(self) -> ExportSpec:
            return ExportSpec((_linear_spec(module=self.proj),))

    class Bare:
        proj = torch.nn.Linear(4, 3)

    holder = Holder()
    assert isinstance(holder, Exportable)
    assert not isinstance(Bare(), Exportable)
    assert holder.export_spec().module_list() == [holder.proj]


def test_export_spec_refuses_axes_beyond_rank_shared_names_and_duplicates():
    import torch

    from t2i.contracts import ExportedModule, ExportSpec

    lin = torch.nn.Linear(2, 2)
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="no axis"):
        ExportedModule("m", lin, (x,), ("x",), ("y",), {"x": {2: "batch"}})
    with pytest.raises(ValueError, match="distinct"):
        ExportedModule("m", lin, (x,), ("x",), ("x",))
    with pytest.raises(TypeError, match="example input 'x' is list"):
        ExportedModule("m", lin, ([1.0],), ("x",), ("y",))
    one = ExportedModule("m", lin, (x,), ("x",), ("y",))
    with pytest.raises(ValueError, match="twice"):
        ExportSpec([one, one])
