"""t2i.checkpoints: streaming safetensors reads, pickle refusal, fit checks, dtype handling."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from t2i.checkpoints import (
    CheckpointError,
    CheckpointReader,
    load_into,
    open_checkpoint,
    save_safetensors,
)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.conv = nn.Conv2d(4, 4, 1)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "lin.weight": torch.randn(4, 3, generator=g),
        "lin.bias": torch.randn(4, generator=g),
        "conv.weight": torch.randn(4, 4, 1, 1, generator=g),
        "conv.bias": torch.randn(4, generator=g),
        "steps": torch.tensor(7),
    }


def test_reader_lists_shapes_without_reading_and_reads_one_key(tmp_path):
    state = _state()
    path = save_safetensors(state, tmp_path / "w.safetensors", metadata={"k": "v"})
    with open_checkpoint(path) as reader:
        assert sorted(reader.keys()) == sorted(state)
        assert reader.shape("conv.weight") == (4, 4, 1, 1)
        assert reader.dtype("lin.bias") == torch.float32
        assert reader.metadata == {"k": "v"}
        torch.testing.assert_close(
            reader.get("lin.weight", dtype=torch.float16), state["lin.weight"].half()
        )
        assert reader.get("steps", dtype=torch.float16).dtype == torch.int64  # ints stay
    assert not (tmp_path / "w.safetensors.tmp").exists()


def test_load_into_meta_module_streams_and_converts(tmp_path):
    state = _state()
    path = save_safetensors(
        {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
        tmp_path / "h.safetensors",
    )
    with torch.device("meta"):
        model = Tiny()
    load_into(model, open_checkpoint(path))
    assert model.lin.weight.device.type == "cpu" and model.lin.weight.dtype == torch.float32
    torch.testing.assert_close(model.lin.weight, state["lin.weight"].half().float())
    assert int(model.steps) == 7
    out = model.conv(model.lin(torch.randn(2, 3))[:, :, None, None])
    assert out.shape == (2, 4, 1, 1)
    half = load_into(Tiny(), open_checkpoint(path), dtype=torch.float16)
    assert half.conv.weight.dtype == torch.float16 and half.steps.dtype == torch.int64


def test_fit_errors_list_every_offending_key_before_reading():
    state = _state()
    state.pop("lin.bias")
    state["conv.weight"] = torch.zeros(4, 4, 3, 3)
    state["head.weight"] = torch.zeros(2)
    reads = []
    reader = CheckpointReader(
        list(state),
        lambda k: tuple(state[k].shape),
        lambda k: None,
        lambda k: reads.append(k) or state[k],
        path="x.safetensors",
    )
    with pytest.raises(CheckpointError) as info:
        load_into(Tiny(), reader, what="Tiny")
    err = info.value
    assert err.missing == ["lin.bias"] and err.unexpected == ["head.weight"]
    assert err.mismatched == [("conv.weight", (4, 4, 3, 3), (4, 4, 1, 1))]
    text = str(err)
    assert "x.safetensors" in text and "does not fit the Tiny" in text and "fix:" in text
    assert reads == []


def test_key_map_and_1x1_reshape():
    state = _state()
    renamed = {"a." + k: v for k, v in state.items()}
    renamed["a.conv.weight"] = state["conv.weight"][:, :, 0, 0]  # stored as Linear
    key_map = {k: "a." + k for k in state}
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_into(Tiny(), renamed, key_map=key_map)
    model = load_into(Tiny(), renamed, key_map=key_map, reshape_1x1=True)
    torch.testing.assert_close(model.conv.weight, state["conv.weight"])
    only = load_into(
        Tiny(),
        {**renamed, "b.other": torch.zeros(1)},
        key_map=key_map,
        source_keys=list(renamed),
        reshape_1x1=True,
    )
    torch.testing.assert_close(only.lin.bias, state["lin.bias"])


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickles_are_refused_unless_allowed(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    torch.save({"state_dict": _state(), "global_step": 875000}, path)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        open_checkpoint(path)
    reader = open_checkpoint(path, allow_pickle=True)
    assert sorted(reader.keys()) == sorted(_state())
    assert reader.metadata["global_step"] == 875000


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_allowed_pickle_still_refuses_code(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _state(), "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        open_checkpoint(path, allow_pickle=True)


def test_pickle_disguised_as_safetensors_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    torch.save(_state(), path)
    with pytest.raises(CheckpointError, match="looks like a pickle"):
        open_checkpoint(path)


def test_truncated_and_garbage_files(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(_state(), str(good))
    data = good.read_bytes()
    for n, cut in enumerate((len(data) - 10, 40, 4)):
        bad = tmp_path / f"bad{n}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated"):
            open_checkpoint(bad)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match="corrupt"):
        open_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="no such file"):
        open_checkpoint(tmp_path / "missing.safetensors")


# -- issue 22: format by parsing, content that does not fit --------------------------------


def _padded_safetensors(path, state, header_length: int):
    """A valid safetensors file whose JSON header is exactly ``header_length`` bytes."""
    import json
    import struct

    data = save_safetensors(state, path).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.dumps(json.loads(data[8 : 8 + n])).encode()
    assert header_length >= len(header)
    header += b" " * (header_length - len(header))  # the format allows trailing spaces
    path.write_bytes(struct.pack("<Q", header_length) + header + data[8 + n :])
    return path


def test_valid_files_load_whatever_byte_their_header_length_starts_with(tmp_path):
    state = _state()
    base = len(save_safetensors(state, tmp_path / "probe.safetensors").read_bytes())
    for first in range(256):  # 0x80 once meant "pickle", refusing valid files
        length = (base // 256 + 1) * 256 + first
        path = _padded_safetensors(tmp_path / f"b{first}.safetensors", state, length)
        assert path.read_bytes()[0] == first
        model = load_into(Tiny(), open_checkpoint(path))
        torch.testing.assert_close(model.lin.weight, state["lin.weight"])
    pk = _padded_safetensors(tmp_path / "pk.safetensors", state, 0x4B50)  # starts with b"PK"
    assert pk.read_bytes()[:2] == b"PK"
    assert sorted(open_checkpoint(pk).keys()) == sorted(state)


def test_safetensors_named_like_a_pickle_loads_without_allow_pickle(tmp_path):
    path = tmp_path / "model.ckpt"
    save_safetensors(_state(), path)
    assert sorted(open_checkpoint(path).keys()) == sorted(_state())


def test_legacy_pickle_is_recognised_by_its_structure(tmp_path):
    path = tmp_path / "legacy.safetensors"
    torch.save(_state(), path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="looks like a pickle"):
        open_checkpoint(path)
    ckpt = tmp_path / "legacy.ckpt"
    ckpt.write_bytes(path.read_bytes())
    assert sorted(open_checkpoint(ckpt, allow_pickle=True).keys()) == sorted(_state())


def test_integer_tensor_for_a_float_parameter_is_a_fit_error(tmp_path):
    state = _state()
    state["lin.weight"] = state["lin.weight"].to(torch.int32)
    path = save_safetensors(state, tmp_path / "int.safetensors")
    with pytest.raises(CheckpointError, match="wrong-dtype keys") as info:
        load_into(Tiny(), open_checkpoint(path), what="Tiny")
    assert info.value.mistyped == [("lin.weight", "torch.int32", "torch.float32")]
    assert "int.safetensors" in str(info.value)


def test_pickle_with_non_string_keys(tmp_path):
    path = tmp_path / "keys.ckpt"
    torch.save({1: torch.zeros(2), "a": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="tensor names must be strings"):
        open_checkpoint(path, allow_pickle=True)


def test_shape_of_a_missing_key_is_a_checkpoint_error(tmp_path):
    path = save_safetensors(_state(), tmp_path / "w.safetensors")
    with open_checkpoint(path) as reader, pytest.raises(CheckpointError, match="not in the"):
        reader.shape("no.such.key")


def test_an_integer_buffer_takes_a_float_counter(tmp_path):
    state = _state()
    state["steps"] = torch.tensor(7.0)  # some files store counters as floats
    model = load_into(Tiny(), open_checkpoint(save_safetensors(state, tmp_path / "f.safetensors")))
    assert model.steps.dtype == torch.int64 and int(model.steps) == 7


def test_empty_module_runs_no_initialiser_and_load_into_fills_it(tmp_path, monkeypatch):
    from t2i.checkpoints import empty_module

    calls = []
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", lambda t, *a, **k: calls.append(t))
    recorder = torch.nn.init.kaiming_uniform_
    model = empty_module(lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))
    assert calls == [] and torch.nn.init.kaiming_uniform_ is recorder  # off, then back on
    assert all(p.is_meta for p in model.parameters())
    state = {"0.weight": torch.ones(4, 3), "0.bias": torch.zeros(4),
             "1.weight": torch.ones(4), "1.bias": torch.zeros(4)}  # fmt: skip
    save_file(state, tmp_path / "m.safetensors")
    load_into(model, open_checkpoint(tmp_path / "m.safetensors"))
    assert not any(p.is_meta for p in model.parameters())
    assert torch.equal(model(torch.ones(1, 3)), torch.zeros(1, 4))


def test_load_into_reads_on_one_thread_and_restores_the_count(monkeypatch):
    """Loading is memory-bound: one thread (no barrier waits on a busy machine), then the
    caller's thread count again."""
    seen = []
    reader = CheckpointReader.from_state_dict(_state())
    real_get = reader.get
    monkeypatch.setattr(
        reader, "get", lambda *a, **k: seen.append(torch.get_num_threads()) or real_get(*a, **k)
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        load_into(Tiny(), reader)
        assert set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_loads_in_other_threads_leave_the_thread_count_alone():
    import threading

    from t2i.checkpoints import _one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []

    def load():
        with _one_thread():
            seen.append(torch.get_num_threads())

    try:
        worker = threading.Thread(target=load)
        worker.start()
        worker.join(10)
        assert seen == [2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
