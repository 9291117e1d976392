"""Malicious pickles never run: whatever the name, format or ``allow_pickle``, a pickle whose
``__reduce__`` would create a marker file ends in a CheckpointError and the marker never
appears (``torch.load(weights_only=True)`` refuses the callable before calling it)."""

from __future__ import annotations

import builtins
import io
import os
import pickle

import pytest
import torch
from fuzz_rules import obeys_rule

from t2i.checkpoints import CheckpointError, open_checkpoint


class OpenMarker:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


class ExecMarker(OpenMarker):
    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


class SystemMarker(OpenMarker):
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


PAYLOADS = {"open": OpenMarker, "exec": ExecMarker, "os.system": SystemMarker}


def _serialise(obj, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "raw":
        pickle.dump(obj, buffer, protocol=2)
    else:
        torch.save(obj, buffer, _use_new_zipfile_serialization=fmt == "zip")
    return buffer.getvalue()


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw"])
@pytest.mark.parametrize("name", ["m.ckpt", "m.safetensors", "m.bin", "m"])
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_payload_never_runs(tmp_path, payload, fmt, name, allow_pickle):
    marker = tmp_path / "PWNED"
    evil = PAYLOADS[payload](str(marker))
    obj = {"state_dict": {"w": torch.zeros(2), "payload": evil}}
    pickle.loads(_serialise(evil, "raw"))  # the payload works when run ...
    assert marker.exists()
    marker.unlink()
    path = tmp_path / name
    path.write_bytes(_serialise(obj, fmt))
    error = obeys_rule(
        "malicious pickles", lambda: open_checkpoint(path, allow_pickle=allow_pickle)
    )
    assert isinstance(error, CheckpointError)  # ... and never through t2i
    assert not marker.exists()
