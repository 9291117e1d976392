"""Textual-inversion embeddings (Gal et al. 2022, "An Image is Worth One Word") in the
layouts AUTOMATIC1111's web UI reads (``modules/textual_inversion/textual_inversion.py``,
documented behaviour; independent implementation):

- ``.pt`` / ``.bin`` (A1111): a dict with ``string_to_param`` ``{"*": (n, D)}`` (plus
  ``name``, ``step`` ...), read with ``torch.load(weights_only=True)`` only when pickles
  are allowed (``allow_pickle``);
- ``.bin`` (diffusers' ``learned_embeds.bin``): ``{token: (D,)}``, one entry;
- ``.safetensors``: ``emb_params`` ``(n, D)``; SDXL: ``clip_l`` ``(n, 768)`` + ``clip_g``
  ``(n, 1280)``, one tensor per text encoder.

The file name without its suffix is the trigger word: a prompt naming it gets its ``n``
vectors in place of the name's tokens. :class:`EmbeddingLibrary` numbers every vector after
the tokenizer's vocabulary (id ``vocab_size + k``), so the tokenizer writes those ids and the
text encoder looks them up (:class:`TokenEmbeddingWithExtras`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import structlog
import torch
from torch import nn

from t2i.checkpoints import CheckpointError, open_checkpoint

log = structlog.get_logger(__name__)

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
SDXL_KEYS = ("clip_l", "clip_g")
"""SDXL embeddings: one tensor per text encoder (CLIP ViT-L, OpenCLIP ViT-bigG)."""


@attrs.frozen(eq=False)
class Embedding:
    """One embedding file: its trigger word and its vectors per text encoder.

    Attributes:
        name: the trigger word (the file name without its suffix).
        path: the file.
        vectors: ``{"": (n, D)}`` for SD1/SD2 files, ``{"clip_l": ..., "clip_g": ...}`` for
            SDXL pairs.
    """

    name: str
    path: str
    vectors: Mapping[str, torch.Tensor]

    @property
    def count(self) -> int:
        """Vectors the name stands for in a prompt."""
        return int(next(iter(self.vectors.values())).shape[0])

    def for_encoder(self, width: int, key: str = "") -> torch.Tensor:
        """The ``(n, width)`` vectors for a text encoder of ``width`` (``key``: SDXL's
        ``clip_l`` / ``clip_g``; "" for SD1/SD2's single encoder).

        Raises:
            ValueError: the file holds no tensor for this encoder, or of another width.
        """
        tensor = self.vectors.get(key)
        if tensor is None:
            has = ", ".join(k or "one tensor" for k in self.vectors)
            raise ValueError(
                f"embedding {self.name!r} ({self.path}) holds {has}, not a tensor for this "
                f"text encoder ({key or 'SD1/SD2: one tensor'}): it was made for another model"
            )
        if tensor.shape[1] != width:
            raise ValueError(
                f"embedding {self.name!r} ({self.path}) has width {tensor.shape[1]}, but this "
                f"text encoder's is {width}: it was made for another model (SD1 768, SD2 1024, "
                "SDXL 768 + 1280)"
            )
        return tensor


def _as_matrix(value: Any, path: Path, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise CheckpointError(f"{what} is not a floating-point tensor", path=path)
    if value.ndim == 1:
        value = value[None]
    if value.ndim != 2 or min(value.shape) < 1:
        got = tuple(value.shape)
        raise CheckpointError(f"{what} must be (vectors, width), got {got}", path=path)
    return value.detach().float()


def _vectors_of(data: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The vectors of a loaded embedding dict, in any of the module docstring's layouts."""
    if all(k in data for k in SDXL_KEYS):
        pair = {k: _as_matrix(data[k], path, k) for k in SDXL_KEYS}
        if pair["clip_l"].shape[0] != pair["clip_g"].shape[0]:
            raise CheckpointError("clip_l and clip_g hold different vector counts", path=path)
        return pair
    if "emb_params" in data:
        return {"": _as_matrix(data["emb_params"], path, "emb_params")}
    params = data.get("string_to_param")
    if isinstance(params, Mapping) and len(params) >= 1:
        return {"": _as_matrix(next(iter(params.values())), path, "string_to_param")}
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(data) == 1 and len(tensors) == 1:  # diffusers: {token: (D,)}
        return {"": _as_matrix(tensors[0], path, "the embedding")}
    raise CheckpointError(
        "not a textual-inversion embedding: expected string_to_param (A1111 .pt), "
        "emb_params (.safetensors), clip_l + clip_g (SDXL) or one {token: tensor} (diffusers)",
        path=path,
        fix="give an embedding file made for Stable Diffusion",
    )


def _load_pickle(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a hostile or corrupt pickle may raise anything
        raise CheckpointError(
            f"cannot load with torch.load(weights_only=True) ({type(exc).__name__}: {exc})",
            path=path,
            fix="convert it to .safetensors with a trusted tool",
        ) from exc


def load_embedding(path: str | os.PathLike, *, allow_pickle: bool = False) -> Embedding:
    """Read one embedding file (layouts: the module docstring).

    Raises:
        CheckpointError: unreadable, refused (a pickle without ``allow_pickle``), or not an
            embedding; the message names the file and the fix.
    """
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        with open_checkpoint(path) as reader:
            data: Any = {k: reader.get(k) for k in reader.keys()}
    else:
        if not allow_pickle:
            raise CheckpointError(
                "refusing to load a pickle embedding: pickles can run arbitrary code",
                path=path,
                fix="convert it to .safetensors, or pass allow_pickle=True if you trust it "
                "(it is then read with torch.load(weights_only=True))",
            )
        data = _load_pickle(path)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"holds a {type(data).__name__}, not a dict", path=path)
    return Embedding(name=path.stem, path=str(path), vectors=_vectors_of(data, path))


@attrs.frozen(eq=False)
class EmbeddingLibrary:
    """The embeddings of a folder, each vector numbered after the vocabulary.

    Attributes:
        embeddings: sorted by name; embedding ``i``'s vectors are ids
            ``vocab_size + offsets[i] ...``.
        skipped: trigger word -> why its file was not loaded (unreadable, not an
            embedding, a pickle without ``allow_pickle``, a name two files share). As in
            A1111, such a file does not stop the folder; a prompt naming it is refused
            with this reason (the tokenizer raises it).
    """

    embeddings: tuple[Embedding, ...] = attrs.field(converter=tuple)
    skipped: Mapping[str, CheckpointError] = attrs.field(factory=dict)

    @property
    def offsets(self) -> list[int]:
        out, total = [], 0
        for embedding in self.embeddings:
            out.append(total)
            total += embedding.count
        return out

    @property
    def size(self) -> int:
        """Vectors in all: the ids ``vocab_size .. vocab_size + size - 1``."""
        return sum(e.count for e in self.embeddings)

    def ids(self, vocab_size: int) -> dict[str, list[int]]:
        """Trigger word -> the token ids its vectors take."""
        return {
            e.name: list(range(vocab_size + o, vocab_size + o + e.count))
            for e, o in zip(self.embeddings, self.offsets)
        }

    def table(self, width: int, key: str = "") -> list[tuple[int, torch.Tensor | ValueError]]:
        """Per embedding, ``(vector count, its (n, width) vectors for this encoder)``, or the
        ValueError saying why it does not fit in place of the vectors (raised only when a
        prompt uses it)."""
        out: list[tuple[int, torch.Tensor | ValueError]] = []
        for embedding in self.embeddings:
            try:
                out.append((embedding.count, embedding.for_encoder(width, key)))
            except ValueError as exc:
                out.append((embedding.count, exc))
        return out

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, allow_pickle: bool = False):
        """Every ``.pt`` / ``.bin`` / ``.safetensors`` under ``folder`` (cached while the
        folder's files are unchanged); a file that cannot be used is logged
        (``embedding_skipped``) and listed in :attr:`skipped`.

        Raises:
            CheckpointError: no such folder.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError("no such embeddings folder", path=folder, fix="check the path")
        files = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EMBEDDING_SUFFIXES
        )
        stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        return _library(stamp, allow_pickle)


@functools.lru_cache(maxsize=4)
def _library(stamp: tuple, allow_pickle: bool) -> EmbeddingLibrary:
    loaded: dict[str, list[Embedding]] = {}
    failed: dict[str, CheckpointError] = {}
    for path, _, _ in stamp:
        try:
            embedding = load_embedding(path, allow_pickle=allow_pickle)
        except CheckpointError as exc:
            failed.setdefault(Path(path).stem, exc)
            log.warning("embedding_skipped", path=path, reason=str(exc))
            continue
        loaded.setdefault(embedding.name, []).append(embedding)
    skipped = {name: exc for name, exc in failed.items() if name not in loaded}
    for name, same in loaded.items():
        if len(same) > 1:
            skipped[name] = CheckpointError(
                f"two embeddings are named {name!r} ({same[0].path})",
                path=same[1].path,
                fix="rename one: the file name is the word a prompt uses",
            )
            log.warning("embedding_skipped", path=same[1].path, reason=str(skipped[name]))
    usable = [same[0] for name, same in loaded.items() if name not in skipped]
    log.debug("embeddings.loaded", count=len(usable), skipped=len(skipped))
    return EmbeddingLibrary(sorted(usable, key=lambda e: e.name), dict(sorted(skipped.items())))


class TokenEmbeddingWithExtras(nn.Embedding):
    """A token embedding whose ids past the vocabulary look up embedding vectors.

    Holds the original ``weight`` (same parameter: state dict keys unchanged) and the
    library's vectors as a non-persistent buffer; a row for an embedding that does not fit
    this encoder raises its ValueError when an id of it is looked up.
    """

    def __init__(
        self, base: nn.Embedding, table: list[tuple[int, torch.Tensor | ValueError]]
    ) -> None:
        super().__init__(base.num_embeddings, base.embedding_dim, device="meta")
        self.weight = base.weight
        rows: list[torch.Tensor] = []
        self.problems: dict[int, tuple[int, ValueError]] = {}
        start = 0
        for count, vectors in table:
            if isinstance(vectors, ValueError):
                self.problems[start] = (count, vectors)
                vectors = torch.zeros(count, base.embedding_dim)
            rows.append(vectors)
            start += count
        extras = torch.cat(rows) if rows else torch.zeros(0, base.embedding_dim)
        self.register_buffer("extras", extras.to(base.weight), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vocab = self.num_embeddings
        extra = ids >= vocab
        if not bool(extra.any()):
            return super().forward(ids)
        local = (ids - vocab).clamp(min=0)
        for start, (count, error) in self.problems.items():
            if bool(((local >= start) & (local < start + count) & extra).any()):
                raise error
        base = super().forward(ids.clamp(max=vocab - 1))
        looked_up = self.extras.to(base.dtype)[local.clamp(max=max(len(self.extras) - 1, 0))]
        return torch.where(extra[..., None], looked_up, base)
