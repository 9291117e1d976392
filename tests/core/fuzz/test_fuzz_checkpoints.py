"""Fuzz: mutated safetensors bytes, headers and contents, and odd pickles, through
``open_checkpoint`` (every tensor read) and ``load_into``.

Rule (see ``fuzz_rules``): a result or a :class:`CheckpointError`; nothing else, no hang,
no memory blow-up; a file whose only change is another floating dtype still loads.
"""

from __future__ import annotations

import itertools
import json
import struct

import pytest
import torch
from fuzz_rules import bounded_memory, fuzz_settings, obeys_rule
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save
from torch import nn

from t2i.checkpoints import CheckpointError, load_into, open_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.conv = nn.Conv2d(4, 2, 1)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=g) for k, v in Tiny().state_dict().items()} | {
        "steps": torch.tensor(7)
    }


STATE = _state()
GOOD = save(STATE, metadata={"format": "pt", "note": "t2i fuzz"})
HEADER_LEN = struct.unpack("<Q", GOOD[:8])[0]
HEADER = json.loads(GOOD[8 : 8 + HEADER_LEN])
BODY = GOOD[8 + HEADER_LEN :]
_names = itertools.count()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _check(path, allow_pickle: bool = False) -> None:
    """Open, read every tensor, load into the model: the whole read path."""
    with open_checkpoint(path, allow_pickle=allow_pickle) as reader:
        for key in reader.keys():
            reader.shape(key), reader.dtype(key), reader.get(key)
        load_into(Tiny(), reader, what="Tiny")


def _write(tmp_path, data: bytes, suffix: str = ".safetensors"):
    path = tmp_path / f"f{next(_names)}{suffix}"
    path.write_bytes(data)
    return path


byte_edit = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, len(GOOD))),
    st.tuples(st.just("set"), st.integers(0, len(GOOD) - 1), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, len(GOOD)), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, len(GOOD) - 1), st.integers(1, 64)),
    st.tuples(st.just("length"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("length"), st.integers(0, len(GOOD) + 16)),
)


def _apply_bytes(data: bytes, edit: tuple) -> bytes:
    kind = edit[0]
    if kind == "truncate":
        return data[: edit[1]]
    if kind == "set" and edit[1] < len(data):
        return data[: edit[1]] + bytes([edit[2]]) + data[edit[1] + 1 :]
    if kind == "insert":
        return data[: edit[1]] + edit[2] + data[edit[1] :]
    if kind == "delete":
        return data[: edit[1]] + data[edit[1] + edit[2] :]
    if kind == "length":
        return struct.pack("<Q", edit[1]) + data[8:]
    return data


@fuzz_settings(120)
@given(
    edits=st.lists(byte_edit, min_size=1, max_size=4),
    suffix=st.sampled_from([".safetensors", ".ckpt", ".bin", ""]),
    allow_pickle=st.booleans(),
)
def test_mutated_bytes(tmp_path_factory, edits, suffix, allow_pickle):
    data = GOOD
    for edit in edits:
        data = _apply_bytes(data, edit)
    path = _write(tmp_path_factory.mktemp("b"), data, suffix)
    with bounded_memory():
        obeys_rule("checkpoint bytes", lambda: _check(path, allow_pickle))


header_edit = st.one_of(
    st.tuples(
        st.sampled_from([*STATE, "__metadata__"]),
        st.sampled_from(["dtype", "shape", "data_offsets", "extra"]),
        json_values,
    ),
    st.tuples(st.sampled_from([*STATE, "__metadata__"]), st.just("replace"), json_values),
    st.tuples(st.sampled_from([*STATE, "__metadata__"]), st.just("delete"), st.none()),
    st.tuples(st.text(max_size=8), st.just("replace"), json_values),
    st.tuples(
        st.sampled_from(list(STATE)),
        st.just("dtype"),
        st.sampled_from(["F64", "F16", "BF16", "I8", "U8", "BOOL", "U16", "F8_E4M3", "C64", ""]),
    ),
    st.tuples(
        st.sampled_from(list(STATE)),
        st.just("shape"),
        st.lists(st.integers(-2, 2**40), max_size=5),
    ),
)


def _apply_header(header: dict, edit: tuple):
    name, field, value = edit
    if field == "replace":
        header[name] = value
    elif field == "delete":
        header.pop(name, None)
    elif isinstance(header.get(name), dict):
        header[name][field] = value
    return header


@fuzz_settings(120)
@given(
    edits=st.lists(header_edit, min_size=1, max_size=3),
    whole=st.one_of(st.none(), json_values),
    padding=st.integers(0, 300),
)
def test_mutated_headers(tmp_path_factory, edits, whole, padding):
    header = json.loads(json.dumps(HEADER))
    for edit in edits:
        header = _apply_header(header, edit)
    if whole is not None:
        header = whole
    text = json.dumps(header).encode() + b" " * padding
    path = _write(tmp_path_factory.mktemp("h"), struct.pack("<Q", len(text)) + text + BODY)
    with bounded_memory():
        obeys_rule("checkpoint headers", lambda: _check(path))


_FLOATS = (torch.float16, torch.bfloat16, torch.float64)
tensor_edit = st.one_of(
    st.tuples(st.sampled_from(list(STATE)), st.sampled_from(["int", "bool", "uint8"])),
    st.tuples(st.sampled_from(list(STATE)), st.sampled_from(["rank+", "rank-", "zero", "scalar"])),
    st.tuples(st.sampled_from(list(STATE)), st.sampled_from(["delete", "rename"])),
    st.tuples(st.text(max_size=10), st.just("add")),
)


def _apply_tensor(state: dict, edit: tuple) -> dict:
    key, kind = edit
    t = state.get(key)
    if kind == "add":
        state[key or "extra"] = torch.zeros(2)
    elif kind == "delete":
        state.pop(key, None)
    elif kind == "rename" and t is not None:
        state[key + ".renamed"] = state.pop(key)
    elif t is not None:
        state[key] = {
            "int": lambda: t.to(torch.int32),
            "bool": lambda: t > 0,
            "uint8": lambda: t.to(torch.uint8),
            "rank+": lambda: t[None],
            "rank-": lambda: t.flatten()[:1].reshape(()) if t.dim() == 0 else t.flatten(),
            "zero": lambda: torch.zeros((0, *t.shape[1:])),
            "scalar": lambda: torch.tensor(1.0),
        }[kind]()
    return state


@fuzz_settings(80)
@given(
    edits=st.lists(tensor_edit, max_size=3),
    float_dtype=st.sampled_from(_FLOATS),
    as_pickle=st.booleans(),
)
def test_mutated_contents(tmp_path_factory, edits, float_dtype, as_pickle):
    state = {k: v.to(float_dtype) if v.is_floating_point() else v for k, v in STATE.items()}
    for edit in edits:
        state = _apply_tensor(state, edit)
    folder = tmp_path_factory.mktemp("c")
    if as_pickle:
        path = folder / f"m{next(_names)}.ckpt"
        torch.save({"state_dict": state}, path)
    else:
        path = _write(folder, save({k: v.contiguous() for k, v in state.items()}))
    error = obeys_rule("checkpoint contents", lambda: _check(path, allow_pickle=True))
    if not edits:  # only the floating dtype changed: a valid file is never refused
        assert error is None, error


pickle_values = st.recursive(
    st.none() | st.integers() | st.text(max_size=6) | st.just(torch.ones(2)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.one_of(st.text(max_size=6), st.integers(), st.none()), inner, max_size=4
        )
    ),
    max_leaves=10,
)


@fuzz_settings(60)
@given(obj=pickle_values, legacy=st.booleans())
def test_odd_pickles(tmp_path_factory, obj, legacy):
    path = tmp_path_factory.mktemp("p") / f"p{next(_names)}.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    obeys_rule("pickle structures", lambda: _check(path, allow_pickle=True))


def test_rule_accepts_only_checkpoint_errors(tmp_path):
    """The harness itself: a documented error passes, a raw one fails the example."""
    assert isinstance(obeys_rule("self", lambda: open_checkpoint(tmp_path)), CheckpointError)
    with pytest.raises(AssertionError, match="undocumented KeyError"):
        obeys_rule("self", lambda: {}["x"])
