"""OpenAI's ``encoder.pkl`` / ``decoder.pkl`` -> safetensors, without executing the pickle.

OpenAI released the dVAE as whole pickled ``nn.Module`` objects (``torch.save`` of
``dall_e.Encoder`` / ``dall_e.Decoder``), which ``torch.load`` can only open by running
arbitrary code (``weights_only=False``). :class:`RestrictedUnpickler` instead resolves every
global the pickle names against a closed allow-list:

- the module classes of that layout (``dall_e.encoder.Encoder``, ``dall_e.utils.Conv2d``,
  ``torch.nn.modules.container.Sequential`` ...) become inert :class:`ModuleRecord` objects
  that only keep the state the pickle gives them (no class of theirs is imported or run);
- tensors are rebuilt from the archive's raw storages by our own functions standing in for
  ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``; storage types map to dtypes;
- ``collections.OrderedDict``, ``builtins.set`` and ``torch.device`` are rebuilt as data.

Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises
:class:`UnsafePickleError` before it is called. The walk over the records gives OpenAI's state
dict (``blocks.input.w`` ...), which must load strictly into :mod:`t2i_dalle.dvae`'s modules.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

MODULE_CLASSES = frozenset(
    {
        "dall_e.encoder.Encoder",
        "dall_e.encoder.EncoderBlock",
        "dall_e.decoder.Decoder",
        "dall_e.decoder.DecoderBlock",
        "dall_e.utils.Conv2d",
        "torch.nn.modules.container.Sequential",
        "torch.nn.modules.activation.ReLU",
        "torch.nn.modules.pooling.MaxPool2d",
        "torch.nn.modules.upsampling.Upsample",
        "torch.nn.modules.linear.Identity",
    }
)
"""The classes of OpenAI's dVAE pickles, rebuilt as :class:`ModuleRecord` s."""

STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "BoolStorage": torch.bool,
    "ByteStorage": torch.uint8,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (nothing of it was run)."""


class ModuleRecord:
    """The pickled state of one module of the allowed classes, and its class name."""

    class_name = "?"

    def __setstate__(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{self.class_name}: state is not a dict")
        self.state = state

    def children(self) -> dict[str, ModuleRecord]:
        return dict(getattr(self, "state", {}).get("_modules") or {})

    def tensors(self) -> dict[str, torch.Tensor]:
        state = getattr(self, "state", {})
        out = dict(state.get("_parameters") or {})
        out.update(state.get("_buffers") or {})
        return {k: v for k, v in out.items() if v is not None}


def _record_class(name: str) -> type[ModuleRecord]:
    return type(name.rsplit(".", 1)[1] + "Record", (ModuleRecord,), {"class_name": name})


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *_rest) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise UnsafePickleError("a tensor's storage is not one of the archive's storages")
    return storage.as_strided(tuple(size), tuple(stride), int(offset)).clone()


def _rebuild_parameter(data, *_rest) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError("a parameter's data is not a tensor")
    return data


SAFE_FUNCTIONS = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "__builtin__.set": set,
    "torch.device": lambda *args: str(args[0]) if args else "cpu",
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a ``torch.save`` zip archive with the allow-list above."""

    def __init__(self, file, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(file)
        self.archive, self.root = archive, root
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in MODULE_CLASSES:
            return _record_class(full)
        if full in SAFE_FUNCTIONS:
            return SAFE_FUNCTIONS[full]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise UnsafePickleError(
            f"refused global {full!r}: not part of OpenAI's dVAE pickle layout (nothing was run)"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise UnsafePickleError(f"refused persistent id {pid!r}")
        kind, key = pid[1], str(pid[2])
        if not isinstance(kind, _StorageType):
            raise UnsafePickleError(f"storage {key}: unknown storage type {kind!r}")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.root}/data/{key}"))
            self.storages[key] = (
                torch.frombuffer(raw, dtype=kind.dtype) if raw else torch.empty(0, dtype=kind.dtype)
            )
        return self.storages[key]


def load_module_records(path: str | os.PathLike) -> ModuleRecord:
    """The root :class:`ModuleRecord` of a ``torch.save`` zip archive of a dVAE module."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UnsafePickleError(
            f"{path} is not a torch.save zip archive (a legacy or bare pickle is not read: "
            "re-save it with torch >= 1.6 in a sandbox, or pass OpenAI's released files)"
        )
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise UnsafePickleError(f"{path}: expected one data.pkl in the archive, got {pkl}")
        root = pkl[0][: -len("/data.pkl")]
        with archive.open(pkl[0]) as f:
            obj = RestrictedUnpickler(f, archive, root).load()
    if not isinstance(obj, ModuleRecord):
        raise UnsafePickleError(f"{path}: the pickle holds a {type(obj).__name__}, not a module")
    return obj


def state_dict_of(record: ModuleRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The module tree's parameters and buffers under their dotted names."""
    out = {prefix + k: v for k, v in record.tensors().items()}
    for name, child in record.children().items():
        if not isinstance(child, ModuleRecord):
            raise UnsafePickleError(f"child {prefix + name} is not a module record")
        out.update(state_dict_of(child, f"{prefix}{name}."))
    return out


def convert_openai_dvae(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``encoder.pkl`` or ``decoder.pkl`` -> ``out`` (safetensors, OpenAI's key names).

    The state must load strictly into our :class:`~t2i_dalle.dvae.Encoder` /
    :class:`~t2i_dalle.dvae.Decoder` of the shape read off the tensors.
    """
    from t2i.checkpoints import save_safetensors
    from t2i_dalle.dvae import Decoder, Encoder, config_from_state

    record = load_module_records(path)
    kinds = {"dall_e.encoder.Encoder": "encoder", "dall_e.decoder.Decoder": "decoder"}
    which = kinds.get(record.class_name)
    if which is None:
        raise UnsafePickleError(f"{path}: the root module is {record.class_name}, not a dVAE")
    state = {k: v.float().contiguous() for k, v in state_dict_of(record).items()}
    config = config_from_state(state, which)
    (Encoder if which == "encoder" else Decoder)(config).load_state_dict(state, strict=True)
    out = Path(out)
    save_safetensors(state, out, metadata={"format": f"openai-dvae-{which}"})
    return out
