"""The word tokenizer of ``dalle-shapes``: a closed vocabulary over the benchmark's captions.

The shapes captions (:mod:`t2i.shapes.captions`) are made of a few dozen words, so a word
vocabulary is exact where a BPE would only add length. Ids: ``<pad>`` 0, ``<bos>`` 1,
``<eos>`` 2, ``<unk>`` 3, then the words in sorted order. A prompt is lower-cased, split into
words (letters only), and laid out as ``<bos> words <eos> <pad> ...`` to ``text_len``.

A prompt of more than ``text_len - 2`` words is an error, not a silent truncation: cutting a
two-object caption drops the second object or its relation, and the image would then be
judged wrong for a reason the user cannot see. The vocabulary travels in the model's JSON, so
a shipped model keeps its ids when the benchmark's wording grows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)

_WORD = re.compile(r"[a-z]+")


class PromptTooLongError(ValueError):
    """A prompt has more words than the model's text context holds."""


def caption_words() -> list[str]:
    """Every word the benchmark's caption templates and synonyms can produce, sorted."""
    from t2i.shapes import captions as C

    texts: list[str] = ["a", "an", "the"]
    for table in (
        C.SIZE_WORDS,
        C.COLOR_WORDS,
        C.SHAPE_WORDS,
        C.BACKGROUND_WORDS,
        C.POSITION_PHRASES,
        C.RELATION_PHRASES,
    ):
        texts += [p for phrases in table.values() for p in phrases]
    texts += [*C.BACKGROUND_TEMPLATES, *C.SINGLE_TEMPLATES, *C.PAIR_TEMPLATES]
    words = {w for t in texts for w in _WORD.findall(re.sub(r"\{[^}]*\}", " ", t).lower())}
    return sorted(words)


def split_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Prompts -> ``(B, text_len)`` ids (see the module docstring)."""

    def __init__(self, words: Sequence[str], text_len: int) -> None:
        if text_len < 3:
            raise ValueError(f"text_len must be >= 3 (<bos>, a word, <eos>), got {text_len}")
        self.words, self.text_len = list(words), int(text_len)
        self.index = {w: i + len(SPECIALS) for i, w in enumerate(self.words)}

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.words)

    def encode(self, text: str) -> list[int]:
        words = split_words(text)
        room = self.text_len - 2
        if len(words) > room:
            raise PromptTooLongError(
                f"the prompt has {len(words)} words; this model reads at most {room} "
                f"(text context {self.text_len} with <bos>/<eos>): shorten the prompt"
            )
        ids = [BOS, *(self.index.get(w, UNK) for w in words), EOS]
        return ids + [PAD] * (self.text_len - len(ids))

    def ids(self, texts: Sequence[str]):
        import torch

        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long)

    def export_spec(self):
        """No model: the vocabulary and text context travel in the export's manifest, and
        :func:`t2i_dalle.deployed.word_tokenizer` rebuilds this tokenizer from them (so an
        ONNX runtime reads no model folder for it)."""
        from t2i.contracts import Deployment, ExportSpec

        options = {"words": list(self.words), "text_len": self.text_len}
        return ExportSpec((), deployment=Deployment("t2i_dalle.deployed:word_tokenizer", options))

    def __call__(self, texts: Sequence[str]):
        from t2i.payloads import Tokens

        ids = self.ids(texts)
        return Tokens(ids, None, ids != PAD)
