"""Atomic file writes: the one helper every save in t2i goes through.

A write goes to a temporary file beside its target, is flushed to disk, then renamed
into place (``os.replace``, atomic on POSIX and Windows), so an interrupted save
(SIGKILL, full disk, an exception in the writer) never leaves a half-written file and
never destroys the previous version.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it into place.

    The parent folder must exist. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomically(path, lambda f: f.write(text.encode("utf-8")))
