"""Image files as AUTOMATIC1111 writes them: the format from the extension, the generation
parameters inside, and numbering that never overwrites.

- ``.png``: the infotext in a ``parameters`` text chunk;
- ``.jpg`` / ``.jpeg`` / ``.webp``: the infotext in EXIF ``UserComment`` (tag 0x9286 of the
  Exif IFD), encoded as piexif's ``UserComment.dump(..., encoding="unicode")`` does it
  (``b"UNICODE\\0"`` + UTF-16-BE), which A1111's PNG-info tab reads back.

A folder output continues after the highest ``NNNNN-`` number already in it (A1111's
``get_next_sequence_number``); a file output that exists gets a numbered sibling
(``name-0001.png``) unless ``overwrite`` is set. Files are created without clobbering
(:func:`t2i.files.write_atomically` with ``overwrite=False``), so two processes writing to
one folder never replace each other's images.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from t2i.files import write_atomically

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
"""Extension -> Pillow format of the image files t2i writes."""
REFUSED = {".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic"}
USER_COMMENT, EXIF_IFD = 0x9286, 0x8769
_UNICODE = b"UNICODE\x00"
_NUMBERED = re.compile(r"^(\d+)-")


class OutputPathError(ValueError):
    """An output path t2i cannot write images to; the message says what to use."""


def encode_image(image: Any, fmt: str, infotext: str | None) -> bytes:
    """``image`` (PIL) as ``fmt`` bytes with ``infotext`` embedded (see the module doc)."""
    buf = io.BytesIO()
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        if infotext:
            info.add_text("parameters", infotext)
        image.save(buf, "PNG", pnginfo=info)
    else:
        from PIL import Image

        exif = Image.Exif()
        if infotext:
            exif.get_ifd(EXIF_IFD)[USER_COMMENT] = _UNICODE + infotext.encode("utf-16-be")
        image.convert("RGB").save(buf, fmt, exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def read_infotext(path: str | Path) -> str | None:
    """The infotext t2i (or A1111) embedded in an image file, or None."""
    from PIL import Image

    with Image.open(path) as im:
        if "parameters" in getattr(im, "text", {}):
            return im.text["parameters"]
        raw = im.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    if not raw:
        return None
    if raw.startswith(_UNICODE):
        return raw[len(_UNICODE) :].decode("utf-16-be")
    return raw[8:].decode("ascii", "replace")


def _is_file_target(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in REFUSED:
        raise OutputPathError(
            f"{path}: t2i does not write {suffix} images; use .png, .jpg, .webp or a folder"
        )
    return suffix in FORMATS


def _next_number(folder: Path) -> int:
    """One past the highest ``NNNNN-`` prefix in ``folder`` (0 in an empty one)."""
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=-1) + 1


def _next_sibling(path: Path) -> int:
    """One past the highest ``stem-NNNN.ext`` beside ``path`` (0 if none; >= 1 if ``path``
    itself exists, so ``name.png`` is followed by ``name-0001.png``)."""
    pattern = re.compile(rf"^{re.escape(path.stem)}-(\d+){re.escape(path.suffix)}$")
    numbers = [int(m.group(1)) for p in path.parent.iterdir() if (m := pattern.match(p.name))]
    start = max(numbers, default=-1) + 1
    return max(start, 1) if path.exists() else start


def _first_free(path: Path, file_target: bool, count: int) -> int | None:
    """The number the next image gets (None: the file name itself, still free). Scanned once
    per call of :func:`save_images`, and again only when another process took a name."""
    if not file_target:
        return _next_number(path)
    if count == 1 and not path.exists():
        return None
    return _next_sibling(path)


def _name(path: Path, file_target: bool, number: int | None, seed: int) -> Path:
    if number is None:
        return path
    return path / f"{number:05d}-{seed}.png" if not file_target else _numbered(path, number)


def save_images(
    images: Sequence[Any],
    infotexts: Sequence[str | None],
    seeds: Sequence[int],
    path: str | Path,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``images`` to ``path`` (a file name with an image extension, or a folder).

    Several images under a file name become ``name-0000.ext``, ``name-0001.ext`` ...; in a
    folder ``NNNNN-<seed>.png``. Without ``overwrite`` an existing file is never replaced:
    the next free number is used (a folder always continues its numbering; ``overwrite``
    only applies to file names). Returns the paths written, in image order.
    """
    path = Path(path)
    file_target = _is_file_target(path)
    (path.parent if file_target else path).mkdir(parents=True, exist_ok=True)
    fmt = FORMATS.get(path.suffix.lower(), "PNG") if file_target else "PNG"
    written: list[Path] = []
    count = len(images)
    if overwrite and file_target:  # the plain names: path, or name-0000 ... name-NNNN
        targets = [path] if count == 1 else [_numbered(path, i) for i in range(count)]
    number = None if overwrite and file_target else _first_free(path, file_target, count)
    for i, (image, info, seed) in enumerate(zip(images, infotexts, seeds)):
        data = encode_image(image, fmt, info)
        write = lambda f, d=data: f.write(d)  # noqa: E731
        if overwrite and file_target:
            written.append(write_atomically(targets[i], write))
            continue
        while True:
            try:
                written.append(
                    write_atomically(_name(path, file_target, number, seed), write, overwrite=False)
                )
                break
            except FileExistsError:  # another process took the name: scan again
                number = _first_free(path, file_target, 2)
        number = (number or 0) + 1
    return written


def _numbered(path: Path, n: int) -> Path:
    return path.with_name(f"{path.stem}-{n:04d}{path.suffix}")
