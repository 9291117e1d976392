"""Atomic file writes: the one helper every save in t2i goes through.

A write goes to a temporary file beside its target, is flushed to disk, then renamed
into place (``os.replace``, atomic on POSIX and Windows), so an interrupted save
(SIGKILL, full disk, an exception in the writer) never leaves a half-written file and
never destroys the previous version. With ``overwrite=False`` the file is linked into
place instead (``os.link``), which fails if the name exists: no clobbering, even between
processes. Files get the permissions the process's umask gives (``mkstemp`` alone would
make them private, 0600).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def write_atomically(
    path: str | os.PathLike,
    write: Callable[[BinaryIO], object],
    *,
    overwrite: bool = True,
) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then move it into place.

    The parent folder must exist. Returns ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``overwrite=False`` and ``path`` exists (nothing was written).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomically(path, lambda f: f.write(text.encode("utf-8")))


_HASHES: dict[tuple[str, int, int], str] = {}


def short_hash(path: str | os.PathLike, length: int = 10) -> str:
    """The first ``length`` hex digits of the file's SHA-256: A1111's "Model hash"
    (``CheckpointInfo.calculate_shorthash``). Memoised per (path, size, mtime)."""
    import hashlib

    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key][:length]
