"""Training data of ``t2i train imagen``: shapes-benchmark renders and their frozen text states.

Images are rendered once (in parallel) at the SR stage's size and kept as uint8; a render
can be cached in a ``.pt`` file (``--data FILE``: written when absent, read when present)
so that the base and the SR trainer of one machine share it. Captions are encoded once by
the frozen MiniLM (:mod:`t2i.text.minilm`): token states ``(N, T, 384)`` fp16, mask and
sentence vector, plus the empty prompt's (the unconditional case of CFG).
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import torch


def render(
    n: int, size: int, *, seed: int = 0, workers: int = 1, pair_fraction: float = 0.5
) -> tuple[torch.Tensor, list[str]]:
    """``n`` training items of the shapes benchmark -> uint8 ``(n, 3, size, size)``, captions."""
    from t2i.shapes.dataset import render_items

    return render_items(n, size, seed=seed, pair_fraction=pair_fraction, workers=workers)


def load_or_render(
    path: str | os.PathLike | None, n: int, size: int, *, pair_fraction: float = 0.5, **options
) -> tuple[torch.Tensor, list[str], float]:
    """A cached render at ``path`` (rendered and written there when absent), or a fresh one:
    ``(images, captions, pair_fraction)``; a cache keeps the pair fraction it was made with.

    A cache of other ``n``/``size`` is refused (ValueError), never silently reused."""
    if path is not None and Path(path).is_file():
        data = torch.load(path, weights_only=True)
        images, captions = data["images"], list(data["captions"])
        if images.shape[0] < n or images.shape[-1] != size:
            raise ValueError(
                f"{path} holds {images.shape[0]} renders of {images.shape[-1]} px; this run "
                f"needs {n} of {size} px: delete it or pass another --data file"
            )
        return images[:n], captions[:n], float(data.get("pair_fraction", pair_fraction))
    images, captions = render(n, size, pair_fraction=pair_fraction, **options)
    if path is not None:
        tmp = Path(f"{path}.tmp{os.getpid()}")
        record = {"images": images, "captions": captions, "pair_fraction": pair_fraction}
        torch.save(record, tmp)
        os.replace(tmp, path)
    return images, captions, pair_fraction


@attrs.frozen(eq=False)
class TextStates:
    """Frozen-encoder outputs of a caption set: ``states (N, T, D)``, ``mask (N, T)`` bool,
    ``pooled (N, D)``; ``empty_*`` the empty prompt's, padded to ``T``."""

    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    empty_states: torch.Tensor
    empty_mask: torch.Tensor
    empty_pooled: torch.Tensor


def encode_captions(
    encoder, tokenizer, captions: list[str], device: torch.device, *, chunk: int = 4096
) -> TextStates:
    """Encode ``captions`` and ``""`` once with the frozen encoder (token states as fp16)."""
    tokens = tokenizer([*captions, ""])
    ids, mask = tokens.ids, tokens.mask
    states, pooled = [], []
    for a in range(0, ids.shape[0], chunk):
        from t2i.payloads import Tokens

        c = encoder(Tokens(ids=ids[a : a + chunk].to(device), mask=mask[a : a + chunk].to(device)))
        states.append(c.embeds.half())
        pooled.append(c.pooled.float())
    s, p, m = torch.cat(states), torch.cat(pooled), mask.to(device)
    return TextStates(s[:-1], m[:-1], p[:-1], s[-1:], m[-1:], p[-1:])
