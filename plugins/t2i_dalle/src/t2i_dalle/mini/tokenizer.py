"""DALL-E Mini's text tokenizer: byte-pair merges of ``vocab.json`` + ``merges.txt``.

As min-dalle reads them: the text is emoji-demojized (when the ``emoji`` package is
installed), lower-cased and stripped to ASCII, split on spaces; each word becomes ``'Ġ'``
(``chr(ord(' ') + 256)``) plus its characters, merged pair by pair in the order of
``merges.txt`` (its first line, a header, skipped); subwords map to ids (``<unk>`` when
absent); the ids are framed by ``<s>`` ... ``</s>`` and padded with id 1 to 64.

A prompt longer than the text context is an error, where min-dalle cuts it (dropping
``</s>`` with the tail): the cut is silent there, and the model never saw a caption without
its end token.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path

from t2i_dalle.text import PromptTooLongError

TEXT_PAD = 1
"""The pad id (:data:`t2i_dalle.mini.bart.TEXT_PAD`; kept here so that the tokenizer imports
no model code, as an ONNX deployment needs)."""

WORD_START = chr(ord(" ") + 256)


def read_merges(path: str | os.PathLike) -> list[tuple[str, str]]:
    lines = Path(path).read_text(encoding="utf8").split("\n")[1:-1]
    return [tuple(line.split()) for line in lines]  # type: ignore[misc]


class BPETokenizer:
    """Prompts -> ``(B, text_len)`` ids of DALL-E Mini's vocabulary."""

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], text_len=64):
        self.vocab, self.text_len = dict(vocab), int(text_len)
        self.rank = {tuple(p): i for i, p in enumerate(merges)}
        for special in ("<s>", "</s>", "<unk>"):
            if special not in self.vocab:
                raise ValueError(f"vocab.json lacks {special!r}: not DALL-E Mini's vocabulary")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, text_len: int = 64) -> BPETokenizer:
        folder = Path(folder)
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf8"))
        return cls(vocab, read_merges(folder / "merges.txt"), text_len)

    def word(self, word: str) -> list[str]:
        parts = [WORD_START, *word]
        while len(parts) > 1:
            pairs = list(itertools.pairwise(parts))
            best = min(pairs, key=lambda p: self.rank.get(p, float("inf")))
            if best not in self.rank:
                break
            i = pairs.index(best)
            parts = [*parts[:i], parts[i] + parts[i + 1], *parts[i + 2 :]]
        return parts

    def encode(self, text: str) -> list[int]:
        try:
            from emoji import demojize

            text = demojize(text, delimiters=("", ""))
        except ImportError:
            pass
        text = text.lower().encode("ascii", errors="ignore").decode()
        unk = self.vocab["<unk>"]
        ids = [self.vocab.get(s, unk) for w in text.split(" ") if w for s in self.word(w)]
        ids = [self.vocab["<s>"], *ids, self.vocab["</s>"]]
        if len(ids) > self.text_len:
            raise PromptTooLongError(
                f"the prompt is {len(ids)} tokens with <s>/</s>; DALL-E Mini reads at most "
                f"{self.text_len}: shorten the prompt"
            )
        return ids

    def ids(self, texts: Sequence[str]):
        import torch

        rows = [self.encode(t) for t in texts]
        out = torch.full((len(rows), self.text_len), TEXT_PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out

    def export_spec(self):
        """No model: the vocabulary and merges travel in the export's manifest
        (:func:`t2i_dalle.mini.deployed.tokenizer` rebuilds this tokenizer from them)."""
        from t2i.contracts import Deployment, ExportSpec

        merges = [list(p) for p, _ in sorted(self.rank.items(), key=lambda item: item[1])]
        options = {"vocab": self.vocab, "merges": merges, "text_len": self.text_len}
        return ExportSpec((), deployment=Deployment("t2i_dalle.mini.deployed:tokenizer", options))

    def __call__(self, texts: Sequence[str]):
        from t2i.payloads import Tokens

        ids = self.ids(texts)
        return Tokens(ids, None, ids != TEXT_PAD)
