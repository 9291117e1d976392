"""Reading and writing weight files, family-independent.

safetensors is the format t2i writes and prefers (https://github.com/huggingface/safetensors:
an 8-byte little-endian header length, a JSON header of ``{name: {dtype, shape,
data_offsets}}`` and ``__metadata__``, then the raw bytes). Pickle files (``.ckpt``,
``.pt``, ``.pth``, ``.bin``) can run code when loaded: they are refused unless the caller
passes ``allow_pickle=True``, and then read only with ``torch.load(weights_only=True)``.

Loading streams: :func:`open_checkpoint` gives a :class:`CheckpointReader` that reads one
tensor at a time (``safe_open`` + ``get_tensor``), and :func:`load_into` checks every key
and shape *before* reading any tensor, then converts each tensor to the target dtype and
device and assigns it into the module (which may live on the ``meta`` device), so two
full copies of the weights never coexist. A file that does not fit raises
:class:`CheckpointError` listing the missing, unexpected and mis-shaped keys and the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import pickletools
import struct
import threading
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog
import torch
from safetensors import SafetensorError
from torch import nn

log = structlog.get_logger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
SAFETENSORS = "safetensors"
ZIP_PICKLE = "zip pickle"
LEGACY_PICKLE = "legacy pickle"
MAX_HEADER_BYTES = 100 * 1024 * 1024
"""The safetensors library's own limit on the JSON header."""


class CheckpointError(Exception):
    """A weight file that cannot be read or does not fit the model.

    Attributes:
        path: the file (or folder), when known.
        missing: keys the model needs that the file lacks.
        unexpected: keys in the file that the model does not have.
        mismatched: ``(key, file_shape, model_shape)`` triples.
        mistyped: ``(key, file_dtype, model_dtype)`` triples (an integer or bool tensor for
            a floating-point parameter or buffer).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike | None = None,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, tuple, tuple]] = (),
        mistyped: Iterable[tuple[str, str, str]] = (),
        fix: str | None = None,
        limit: int = 20,
    ) -> None:
        self.path = None if path is None else str(path)
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        self.mistyped = sorted(mistyped)
        lines = [f"{self.path}: {message}" if self.path else message]

        def listing(title: str, items: list) -> None:
            if items:
                shown = ", ".join(str(i) for i in items[:limit])
                more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
                lines.append(f"  {title} ({len(items)}): {shown}{more}")

        listing("missing keys", self.missing)
        listing("unexpected keys", self.unexpected)
        listing(
            "mis-shaped keys (key, file shape, model shape)",
            [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched],
        )
        listing(
            "wrong-dtype keys (key, file dtype, model dtype)",
            [f"{k} {a} vs {b}" for k, a, b in self.mistyped],
        )
        if fix:
            lines.append(f"  fix: {fix}")
        self.message, self.fix, self.limit = message, fix, limit
        super().__init__("\n".join(lines))

    def located(self, path: str | os.PathLike) -> CheckpointError:
        """The same error naming ``path`` (when it names no file yet, else itself)."""
        if self.path is not None:
            return self
        return CheckpointError(
            self.message,
            path=path,
            missing=self.missing,
            unexpected=self.unexpected,
            mismatched=self.mismatched,
            mistyped=self.mistyped,
            fix=self.fix,
            limit=self.limit,
        )


_READ_ERRORS = (SafetensorError, OSError)
"""What reading one tensor of a corrupt safetensors file raises."""


def checked_shape(
    shape: Iterable[int],
    key: str,
    rank: int | tuple[int, ...],
    *,
    what: str,
    path: str | os.PathLike | None = None,
    error: type[CheckpointError] | None = None,
) -> tuple[int, ...]:
    """``shape`` as a tuple, when it has ``rank`` dimensions (or one of several), each >= 1.

    Loaders read model sizes off tensor shapes; this is the check before they divide or
    index. Raises ``error`` (default :class:`CheckpointError`) naming ``key`` and ``what``.
    """
    shape = tuple(shape)
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    if len(shape) in ranks and min(shape, default=1) >= 1:
        return shape
    raise (error or CheckpointError)(
        f"{what} tensor {key!r} has shape {shape}; expected "
        f"{' or '.join(map(str, ranks))} dimensions, each >= 1",
        path=path,
        fix="the file is corrupt or not this model family's: export it again",
    )


def is_pickle_path(path: str | os.PathLike) -> bool:
    """True when the suffix is a pickle format (``.ckpt``, ``.pt``, ``.pth``, ``.bin``)."""
    return str(path).lower().endswith(PICKLE_SUFFIXES)


class CheckpointReader:
    """Lazy view of a weight file: names, shapes and dtypes without reading the tensors.

    Use :func:`open_checkpoint` to make one; :meth:`from_state_dict` wraps a dict already in
    memory. ``metadata`` holds the safetensors ``__metadata__`` or a pickle's non-tensor
    top-level entries (``global_step`` ...).
    """

    def __init__(
        self,
        keys: list[str],
        shape_of: Callable[[str], tuple[int, ...]],
        dtype_of: Callable[[str], torch.dtype | None],
        read: Callable[[str], torch.Tensor],
        *,
        path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self._keys, self._shape_of, self._dtype_of, self._read = keys, shape_of, dtype_of, read
        self._key_set = set(keys)
        self.path = path
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._close = close

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, torch.Tensor],
        *,
        path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CheckpointReader:
        """Wrap an in-memory ``{name: tensor}`` dict."""
        return cls(
            list(state),
            lambda k: tuple(state[k].shape),
            lambda k: state[k].dtype,
            lambda k: state[k],
            path=path,
            metadata=metadata,
        )

    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self):
        return iter(self._keys)

    def _require(self, key: str) -> None:
        if key not in self._key_set:
            raise CheckpointError(
                f"key {key!r} is not in the checkpoint",
                path=self.path,
                missing=[key],
                fix="use a complete checkpoint of this model",
            )

    def shape(self, key: str) -> tuple[int, ...]:
        """The tensor's shape, read from the header; a missing key is a CheckpointError."""
        self._require(key)
        return tuple(self._shape_of(key))

    def dtype(self, key: str) -> torch.dtype | None:
        """The tensor's dtype (None for a safetensors dtype torch cannot represent)."""
        self._require(key)
        return self._dtype_of(key)

    def get(
        self,
        key: str,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Read one tensor; floating tensors are cast to ``dtype`` when given."""
        self._require(key)
        try:
            t = self._read(key)
        except _READ_ERRORS as exc:  # a header that lies about the data
            raise CheckpointError(
                f"cannot read tensor {key!r} ({exc}); the file is truncated or corrupt",
                path=self.path,
                fix="download or export the file again",
            ) from exc
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        if device is not None:
            t = t.to(device)
        return t

    def to_state_dict(
        self, keys: Iterable[str] | None = None, **kw: Any
    ) -> dict[str, torch.Tensor]:
        """Read ``keys`` (default: all) into a dict."""
        return {k: self.get(k, **kw) for k in (self._keys if keys is None else keys)}

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _is_safetensors(head: bytes, size: int, fh: Any) -> bool:
    """An 8-byte little-endian length, then that many bytes of JSON holding an object."""
    if len(head) < 8:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    if not 2 <= length <= min(size - 8, MAX_HEADER_BYTES):
        return False
    fh.seek(8)
    try:
        header = json.loads(fh.read(length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return isinstance(header, dict)


def _is_pickle_stream(head: bytes) -> bool:
    """A pickle PROTO opcode with a real protocol, then a valid opcode (parsed, not run)."""
    if len(head) < 3 or head[0] != pickle.PROTO[0] or not 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return False
    ops = pickletools.genops(io.BytesIO(head))
    try:
        next(ops)
        next(ops)
    except (ValueError, StopIteration, EOFError, struct.error):
        return False
    return True


def _is_torch_zip(path: Path) -> bool:
    """A zip archive holding a ``data.pkl`` (``torch.save``'s format since PyTorch 1.6)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def detect_format(path: str | os.PathLike) -> str | None:
    """What the file *is*, decided by parsing its structure, never by its name or first byte.

    Returns :data:`SAFETENSORS` (a header that parses), :data:`ZIP_PICKLE` (a zip archive with
    a ``data.pkl``), :data:`LEGACY_PICKLE` (a pickle stream) or None. Nothing is unpickled.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(64)
        if _is_safetensors(head, size, fh):
            return SAFETENSORS
    if head[:4] == b"PK\x03\x04" and _is_torch_zip(path):
        return ZIP_PICKLE
    if _is_pickle_stream(head):
        return LEGACY_PICKLE
    return None


def _open_safetensors(path: Path) -> CheckpointReader:
    from safetensors import safe_open

    size = path.stat().st_size
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
        keys = list(handle.keys())
        meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"not a readable safetensors file ({exc}); it is truncated, corrupt, or not "
            f"safetensors ({size} bytes)",
            path=path,
            fix="download or export the file again, and check its extension",
        ) from exc

    def slice_of(key: str):
        return handle.get_slice(key)

    def dtype_of(key: str) -> torch.dtype | None:
        return _SAFETENSORS_DTYPES.get(slice_of(key).get_dtype())

    return CheckpointReader(
        keys,
        lambda k: tuple(slice_of(k).get_shape()),
        dtype_of,
        handle.get_tensor,
        path=str(path),
        metadata=meta,
        close=lambda: None,
    )


def _unwrap_pickle(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"pickle holds a {type(obj).__name__}, not a dict of tensors",
            path=path,
            fix="save the model's state_dict(), preferably as safetensors",
        )
    meta = {
        k: v
        for k, v in obj.items()
        if isinstance(k, str) and not isinstance(v, (torch.Tensor, Mapping))
    }
    for nest in ("state_dict", "model_state_dict", "module"):
        inner = obj.get(nest)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("pickle holds no tensors", path=path)
    odd = [repr(k) for k in tensors if not isinstance(k, str)]
    if odd:
        raise CheckpointError(
            f"tensor names must be strings; {len(odd)} are not: {', '.join(odd[:10])}",
            path=path,
            fix="save a state_dict() (string keys), preferably as safetensors",
        )
    return tensors, meta


_PICKLE_ERRORS: tuple[type[BaseException], ...] = (
    pickle.UnpicklingError,
    SafetensorError,  # torch.load hands files named .safetensors to safetensors
    EOFError,
    RuntimeError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    ImportError,
    OSError,
    struct.error,
    UnicodeDecodeError,
    zipfile.BadZipFile,
    RecursionError,
)
"""What ``torch.load(weights_only=True)`` raises on a corrupt or hostile file."""


def _open_pickle(path: Path) -> CheckpointReader:
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except _PICKLE_ERRORS as exc:
        raise CheckpointError(
            f"cannot load pickle with weights_only=True ({type(exc).__name__}: {exc}); it is "
            "truncated, corrupt, or holds objects other than tensors",
            path=path,
            fix="convert it to safetensors with a trusted tool",
        ) from exc
    tensors, meta = _unwrap_pickle(obj, path)
    return CheckpointReader.from_state_dict(tensors, path=str(path), metadata=meta)


def _refuse_pickle(path: Path, fmt: str | None) -> CheckpointError:
    if is_pickle_path(path):
        return CheckpointError(
            "refusing to load a pickle checkpoint: pickles can run arbitrary code",
            path=path,
            fix="convert it to .safetensors, or pass allow_pickle=True if you trust the "
            "file (it is then read with torch.load(weights_only=True))",
        )
    return CheckpointError(
        f"file looks like a pickle ({fmt}) but is not named like one; pickles can run "
        "arbitrary code",
        path=path,
        fix="rename it to .ckpt and pass allow_pickle=True if you trust it",
    )


def open_checkpoint(path: str | os.PathLike, *, allow_pickle: bool = False) -> CheckpointReader:
    """Open a weight file for streaming reads; its format is found by parsing, not by name.

    A file whose header parses as safetensors is read as safetensors whatever its suffix; a
    zip or legacy pickle is refused unless ``allow_pickle`` (and always when it is named
    ``.safetensors``), then read with ``torch.load(weights_only=True)`` (which never runs code).

    Args:
        path: a ``.safetensors`` file, or a pickle (``.ckpt``/``.pt``/``.pth``/``.bin``).
        allow_pickle: read pickles (with ``torch.load(weights_only=True)``); off by default
            because a pickle can run code.

    Raises:
        CheckpointError: missing, unreadable, truncated or refused file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such file", path=path, fix="check the path")
    try:
        fmt = detect_format(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read the file ({exc})", path=path) from exc
    if fmt == SAFETENSORS:
        return _open_safetensors(path)
    if fmt is not None or is_pickle_path(path):
        if not allow_pickle or path.suffix.lower() in SAFETENSORS_SUFFIXES:
            raise _refuse_pickle(path, fmt)
        log.warning("loading pickle checkpoint", path=str(path), weights_only=True)
        return _open_pickle(path)
    return _open_safetensors(path)  # raises, saying why it is not safetensors


def save_safetensors(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``state`` as safetensors atomically (temp file, then rename)."""
    from safetensors.torch import save

    from t2i.files import write_atomically

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    data = save(tensors, metadata=dict(metadata or {}))
    return write_atomically(path, lambda f: f.write(data))


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(shape)
    while len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


_INITIALISERS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
    "sparse_",
)  # fmt: skip


def empty_module(factory: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
    """``factory(*args, **kwargs)`` built on the ``meta`` device with ``torch.nn.init``'s
    initialisers switched off: no random initialisation is computed for weights that
    :func:`load_into` then replaces, and none runs on ``meta`` tensors (which would import
    ``torch._dynamo``, seconds on a small CPU). Buffers that are not in the state dict
    (non-persistent) stay on ``meta``: the caller makes them again.

    The initialisers are switched off process-wide while ``factory`` runs (as transformers'
    ``no_init_weights`` does), under a lock; build other modules in other threads meanwhile
    only if they load their weights too.
    """
    init = torch.nn.init
    with _EMPTY_LOCK:
        saved = {name: getattr(init, name) for name in _INITIALISERS}
        for name in _INITIALISERS:
            setattr(init, name, _no_init)
        try:
            with torch.device("meta"):
                return factory(*args, **kwargs)
        finally:
            for name, fn in saved.items():
                setattr(init, name, fn)


def _no_init(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


_EMPTY_LOCK = threading.Lock()


def load_into(
    module: nn.Module,
    source: CheckpointReader | Mapping[str, torch.Tensor],
    *,
    key_map: Mapping[str, str] | None = None,
    source_keys: Iterable[str] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    reshape_1x1: bool = False,
    what: str = "model",
    fix: str | None = None,
) -> nn.Module:
    """Check, then stream ``source`` into ``module``'s parameters and buffers, key by key.

    Args:
        module: target; may be on the ``meta`` device (its tensors are replaced, not copied).
        source: a reader, or an in-memory dict.
        key_map: ``{module_key: source_key}``; identity when None.
        source_keys: the source keys that belong to this module (others are ignored); keys
            among them that ``key_map`` does not use are *unexpected*. Default: all.
        dtype: floating tensors become this dtype; default: the module's own dtype per tensor
            (a float32 module loads an fp16 file as float32 and vice versa). Integer buffers
            take the file's numbers in their own dtype; an integer tensor for a floating
            parameter is a fit error.
        device: target device; default: the module's device (CPU for ``meta`` modules).
        reshape_1x1: accept ``(C, C)`` for ``(C, C, 1, 1)`` and back (Linear vs 1x1 conv).
        what: name used in error messages ("UNet", "VAE" ...).
        fix: advice appended to a :class:`CheckpointError`.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped key; nothing is
            read from the file in that case.
    """
    reader = (
        source
        if isinstance(source, CheckpointReader)
        else (CheckpointReader.from_state_dict(source))
    )
    targets = dict(module.state_dict(keep_vars=True))
    key_map = dict(key_map) if key_map is not None else {k: k for k in targets}
    if set(key_map) != set(targets):
        raise ValueError(f"key_map for {what} must cover exactly the module's keys")
    allowed = set(reader.keys() if source_keys is None else source_keys)
    missing, unexpected, mismatched, mistyped = _fit(reader, targets, key_map, allowed, reshape_1x1)
    if missing or unexpected or mismatched or mistyped:
        raise CheckpointError(
            f"checkpoint does not fit the {what}",
            path=reader.path,
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
            mistyped=mistyped,
            fix=fix or "use a checkpoint of this model family/variant, or the matching config",
        )
    with _one_thread():
        for dst, src in key_map.items():
            old = targets[dst]
            target_device = (
                device
                if device is not None
                else (torch.device("cpu") if old.device.type == "meta" else old.device)
            )
            target_dtype = dtype if dtype is not None else old.dtype
            t = reader.get(src, dtype=target_dtype, device=target_device)
            if not old.is_floating_point():  # an integer buffer (a counter): cast, as torch does
                t = t.to(old.dtype)
            elif not t.is_floating_point():  # a dtype the header hid
                raise CheckpointError(
                    f"checkpoint does not fit the {what}",
                    path=reader.path,
                    mistyped=[(src, str(t.dtype), str(old.dtype))],
                    fix=fix or "use a checkpoint of this model family/variant",
                )
            if t.shape != old.shape:
                t = t.reshape(old.shape)  # (C, C) <-> (C, C, 1, 1)
            _assign(module, dst, t, old)
    return module


@contextlib.contextmanager
def _one_thread():
    """Load on one CPU thread: copying and casting tensor by tensor is memory-bound work that
    torch's thread pool does not speed up, and on a busy machine every parallel copy waits at a
    barrier for a descheduled worker (ldm-shapes' UNet + VAE: 0.2-0.5 s on two threads, 0.16-0.23
    s on one, at load average 1.4; the same when the machine is idle).

    Only in the main thread (the command's loads): torch's thread count is process-wide in some
    OpenMP set-ups and per thread in others, so a single writer keeps it consistent; loads in
    other threads (a server's worker) keep the pool as it is."""
    threads = torch.get_num_threads()
    if threads == 1 or threading.current_thread() is not threading.main_thread():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit(
    reader: CheckpointReader,
    targets: Mapping[str, torch.Tensor],
    key_map: Mapping[str, str],
    allowed: set[str],
    reshape_1x1: bool,
) -> tuple[list, list, list, list]:
    """Missing, unexpected, mis-shaped and wrong-dtype keys, from the header alone."""
    missing = [src for src in key_map.values() if src not in reader or src not in allowed]
    unexpected = sorted(allowed - set(key_map.values()))
    mismatched, mistyped = [], []
    for dst, src in key_map.items():
        if src not in reader or src not in allowed:
            continue
        file_shape, model_shape = reader.shape(src), tuple(targets[dst].shape)
        ok = file_shape == model_shape or (
            reshape_1x1 and _squeezed(file_shape) == _squeezed(model_shape)
        )
        if not ok:
            mismatched.append((src, file_shape, model_shape))
        file_dtype = reader.dtype(src)
        if (
            file_dtype is not None
            and targets[dst].is_floating_point()
            and not file_dtype.is_floating_point
        ):  # integers for weights: the wrong tensor (integer buffers take any number)
            mistyped.append((src, str(file_dtype), str(targets[dst].dtype)))
    return missing, unexpected, mismatched, mistyped


def _assign(module: nn.Module, key: str, value: torch.Tensor, old: torch.Tensor) -> None:
    path, _, name = key.rpartition(".")
    owner = module.get_submodule(path) if path else module
    if name in owner._parameters:
        owner._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        owner._buffers[name] = value
