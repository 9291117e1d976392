"""The two image sets of a DreamBooth run: the subject's, and the class images (cached).

Instance images are read from a folder, resized (shorter side to the training size, Lanczos)
and centre-cropped to a square; the log says which were resized or cropped. Class images
are made by the frozen base model from the class prompt through the engine, written as
PNGs into the class folder with a ``class_images.json`` record of what made them, and
reused by a later run with the same recipe, options, prompt and size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import structlog
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from t2i.files import write_atomically

log = structlog.get_logger("t2i_dreambooth")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
RECORD = "class_images.json"


class InstanceImagesError(ValueError):
    """The instance folder cannot give training images; the message says the fix."""


def _square(image: Image.Image, size: int) -> tuple[Image.Image, bool]:
    """Shorter side to ``size`` (Lanczos), then the centre square; whether it changed."""
    w, h = image.size
    changed = (w, h) != (size, size)
    if min(w, h) != size:
        scale = size / min(w, h)
        image = image.resize(
            (max(size, round(w * scale)), max(size, round(h * scale))), Image.LANCZOS
        )
        w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size)), changed


def load_instance_images(folder: str | Path, size: int) -> torch.Tensor:
    """The folder's images as ``(N, 3, size, size)`` in [0, 1].

    Raises:
        InstanceImagesError: no such folder, no images in it, or a file that does not
            decode as an image (named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InstanceImagesError(
            f"--instance-data-dir {folder}: no such folder; pass the folder of the subject's "
            "images (3-5 PNG/JPEG files)"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InstanceImagesError(
            f"--instance-data-dir {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): "
            "put the subject's 3-5 images there"
        )
    tensors, sizes, resized = [], set(), []
    for path in files:
        try:
            with Image.open(path) as raw:
                image = raw.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise InstanceImagesError(
                f"{path}: not a readable image ({type(exc).__name__}); remove or replace it"
            ) from None
        sizes.add(image.size)
        image, changed = _square(image, size)
        if changed:
            resized.append(path.name)
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        tensors.append(data.view(size, size, 3).permute(2, 0, 1).float() / 255)
    if resized:
        log.warning(
            "instance_images_resized",
            files=resized,
            sizes=sorted(f"{w}x{h}" for w, h in sizes),
            mixed=len(sizes) > 1,
            note=f"resized (shorter side, Lanczos) and centre-cropped to {size}x{size}",
        )
    return torch.stack(tensors)


def _pixels(images: list[Image.Image]) -> torch.Tensor:
    out = []
    for image in images:
        w, h = image.size
        data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
        out.append(data.view(h, w, 3).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def class_images(
    pipe: Any,
    folder: Path,
    *,
    prompt: str,
    count: int,
    size: int,
    batch_size: int,
    seed: int,
    record: dict[str, Any],
    generate_size: int | None = None,
) -> torch.Tensor:
    """``count`` class images ``(count, 3, size, size)`` in [0, 1], made by ``pipe`` (the
    frozen base model) and cached in ``folder``; the ones already there are reused when
    ``folder``'s record matches ``record`` (recipe, options, prompt, size). They are made at
    ``generate_size`` (None: the recipe's own size, e.g. a cascade's output) and resized."""
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / RECORD
    wanted = {**record, "prompt": prompt, "size": size}
    have: list[Path] = []
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            meta = {}
        if {k: meta.get(k) for k in wanted} == wanted:
            have = [folder / f"{i:05d}.png" for i in range(count)]
            have = have[: next((i for i, p in enumerate(have) if not p.is_file()), count)]
        else:
            log.warning("class_images_regenerated", folder=str(folder), reason="other options")
            for stale in folder.glob("*.png"):
                stale.unlink()
    write_atomically(meta_path, lambda f: f.write(json.dumps(wanted, indent=1).encode()))
    if have:
        log.info("class_images_reused", folder=str(folder), count=len(have))
    start = len(have)
    with tqdm(total=count, initial=start, desc="class images", unit="img") as bar:
        for first in range(start, count, batch_size):
            n = min(batch_size, count - first)
            sizes = (
                {} if generate_size is None else {"width": generate_size, "height": generate_size}
            )
            result = pipe(prompt, seed=seed + first, batch_size=n, **sizes)
            for i, image in enumerate(result.images):
                path = folder / f"{first + i:05d}.png"
                write_atomically(path, lambda f, im=image: im.save(f, format="PNG"))
            bar.update(n)
    images = []
    for i in range(count):
        with Image.open(folder / f"{i:05d}.png") as raw:
            images.append(_square(raw.convert("RGB"), size)[0])
    return _pixels(images)
