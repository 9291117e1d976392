"""Training data of ``t2i train gan``: shapes-benchmark renders and their caption vectors.

Item ``i`` is :func:`t2i.shapes.dataset.make_sample` ``("train", i, size, seed=0,
pair_fraction)``: its image (uint8, rendered in parallel) and caption. Captions are encoded
once by the frozen MiniLM (:mod:`t2i_gan.text`), or read from a folder of precomputed
vectors (``chunk*.pt`` files ``{"start", "captions", "emb"}``, items ``start ..``), so a
machine without MiniLM can still train; the captions are checked against the renders.

A word pooling GAN (``--word-queries``) also needs each caption's per-token MiniLM states
(:class:`CaptionText`: fp16 ``(n, T, 384)`` and a mask, ~0.7 GB for 36,000 captions):
chunks that hold ``"words"`` and ``"mask"`` beside ``"emb"`` (:func:`write_vectors`), else
MiniLM encodes the captions on the spot.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import structlog
import torch
import torch.nn.functional as F

log = structlog.get_logger("t2i_gan.data")


@attrs.frozen(eq=False)
class CaptionText:
    """Captions as G and C read them: ``sentences (n, D)`` float32, and for word pooling
    ``words (n, T, D)`` fp16 per-token states with ``mask (n, T)`` bool (else None)."""

    sentences: torch.Tensor
    words: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.sentences.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rows ``idx``: ``(sentences,)`` or ``(sentences, words float32, mask)``."""
        if self.words is None:
            return (self.sentences[idx],)
        return self.sentences[idx], self.words[idx].float(), self.mask[idx]

    def head(self, n: int) -> CaptionText:
        """The first ``n`` rows."""
        return self._map(lambda t: t[:n])

    def to(self, device) -> CaptionText:
        return self._map(lambda t: t.to(device))

    def _map(self, f) -> CaptionText:
        words, mask = (None if t is None else f(t) for t in (self.words, self.mask))
        return CaptionText(f(self.sentences), words, mask)


def _pad_cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``(n_i, T_i, ...)`` along rows, zero-padding every T_i to the longest."""
    t = max(x.shape[1] for x in tensors)
    return torch.cat([F.pad(x, [0, 0] * (x.dim() - 2) + [0, t - x.shape[1]]) for x in tensors])


def render_items(
    n: int, size: int = 64, *, pair_fraction: float = 0.5, workers: int | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Items ``0 .. n-1`` -> uint8 images ``(n, 3, size, size)`` and their captions."""
    from t2i.shapes.dataset import render_items as render

    return render(n, size, pair_fraction=pair_fraction, workers=workers)


def load_vectors(
    folder: str | os.PathLike, *, words: bool = False
) -> tuple[torch.Tensor | CaptionText, list[str]]:
    """Precomputed sentence vectors of items ``0 .. n-1`` (``chunk*.pt``, contiguous); with
    ``words`` a :class:`CaptionText` whose ``words`` is None when a chunk lacks them."""
    files = sorted(Path(folder).glob("chunk*.pt"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no chunk*.pt files of sentence vectors")
    chunks = sorted((torch.load(f, weights_only=True) for f in files), key=lambda c: c["start"])
    vectors, captions = [], []
    for c in chunks:
        if c["start"] != len(captions):
            raise ValueError(f"{folder}: chunks are not contiguous at item {len(captions)}")
        vectors.append(c["emb"].float())
        captions += list(c["captions"])
    if not words:
        return torch.cat(vectors), captions
    if not all("words" in c and "mask" in c for c in chunks):
        return CaptionText(torch.cat(vectors)), captions
    states = _pad_cat([c["words"].half() for c in chunks])
    mask = _pad_cat([c["mask"].bool() for c in chunks])
    return CaptionText(torch.cat(vectors), states, mask), captions


@torch.no_grad()
def encode_captions(
    captions: list[str], *, device: torch.device | str = "cpu", batch: int = 512
) -> torch.Tensor:
    """MiniLM sentence vectors ``(n, 384)`` of ``captions`` (float32, on ``device``)."""
    return encode_text(captions, words=False, device=device, batch=batch).sentences


@torch.no_grad()
def encode_text(
    captions: list[str], *, words: bool, device: torch.device | str = "cpu", batch: int = 512
) -> CaptionText:
    """MiniLM's :class:`CaptionText` of ``captions`` (with per-token states if ``words``)."""
    from t2i_gan.text import SentenceEncoder, SentenceTokenizer

    tokenizer, encoder = SentenceTokenizer(), SentenceEncoder(words=True).to(device)
    pooled, states, masks = [], [], []
    for i in range(0, len(captions), batch):
        cond = encoder(tokenizer(captions[i : i + batch]))
        pooled.append(cond.pooled)
        if words:
            states.append((cond.embeds * cond.mask[..., None]).half())
            masks.append(cond.mask)
    if not words:
        return CaptionText(torch.cat(pooled))
    return CaptionText(torch.cat(pooled), _pad_cat(states), _pad_cat(masks))


def write_vectors(
    folder: str | os.PathLike, captions: list[str], *, words: bool = True, chunk: int = 4096,
    device: torch.device | str = "cpu",
) -> list[Path]:  # fmt: skip
    """Encode ``captions`` (items ``0 ..``) into ``chunk*.pt`` files :func:`load_vectors`
    reads (``--vectors``): ``emb``, and with ``words`` also ``words`` (fp16) and ``mask``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for start in range(0, len(captions), chunk):
        part = captions[start : start + chunk]
        text = encode_text(part, words=words, device=device)
        item = {"start": start, "captions": part, "emb": text.sentences.half().cpu()}
        if words:
            item.update(words=text.words.cpu(), mask=text.mask.cpu())
        files.append(folder / f"chunk{start // chunk:05d}.pt")
        torch.save(item, files[-1])
    return files


def _stored(vectors, n: int, captions: list[str], words: bool) -> torch.Tensor | CaptionText:
    """``vectors``' first ``n`` items, checked against the renders' captions."""
    emb, stored = load_vectors(vectors, words=words)
    if len(stored) < n:
        raise ValueError(f"{vectors} holds {len(stored)} vectors, fewer than --images {n}")
    bad = [i for i in range(0, n, max(1, n // 64)) if stored[i] != captions[i]]
    if bad:
        raise ValueError(
            f"{vectors}: captions differ from the renders at items {bad[:4]}: the vectors "
            "were made with another --pair-fraction"
        )
    return emb[:n] if torch.is_tensor(emb) else emb.head(n)


def _encode(captions: list[str], words: bool, vectors, device) -> CaptionText:
    """:func:`encode_text`, saying what was missing when MiniLM is not installed either."""
    from t2i.text.minilm import MiniLmNotFoundError

    try:
        return encode_text(captions, words=words, device=device)
    except MiniLmNotFoundError as exc:
        if vectors is None:
            raise
        raise MiniLmNotFoundError(
            f"--word-queries needs the captions' per-token states: {vectors} holds sentence "
            f"vectors only (write_vectors(..., words=True) makes both), and {exc}"
        ) from exc


def training_set(
    n: int, size: int, *, pair_fraction: float, vectors: str | os.PathLike | None, device,
    words: bool = False,
) -> tuple[torch.Tensor, CaptionText]:  # fmt: skip
    """uint8 images ``(n, 3, S, S)`` and their :class:`CaptionText` on ``device`` (float
    sentence vectors ``(n, 384)``; with ``words`` the fp16 token states and mask too)."""
    images, captions = render_items(n, size, pair_fraction=pair_fraction)
    text = None
    if vectors is not None:
        stored = _stored(vectors, n, captions, words)
        text = stored if isinstance(stored, CaptionText) else CaptionText(stored)
        if words and text.words is None:
            log.info("gan.data.encode_words", reason=f"{vectors} holds no per-token states")
            text = None
    if text is None:
        text = _encode(captions, words, vectors, device)
    log.info("gan.data", images=n, size=size, pair_fraction=pair_fraction, words=words)
    return images.to(device), text.to(device)
