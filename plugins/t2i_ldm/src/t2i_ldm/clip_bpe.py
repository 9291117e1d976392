"""CLIP's byte-level BPE as a ``tokenizers.Tokenizer``, built without importing transformers.

transformers' ``CLIPTokenizer`` (v5) is a thin wrapper that builds exactly this ``tokenizers``
pipeline (NFC, whitespace runs to one space, lower case; CLIP's split regex, then byte level;
BPE with ``</w>`` word ends); importing it costs transformers' whole top level (about 0.4 s on a
small CPU), which is why :class:`t2i_ldm.tokenizer.ClipTokenizer` builds the pipeline here for
in-memory vocabularies (the shipped ``ldm-shapes`` one, OpenAI's merges list). The serialized
pipeline equals transformers' (``tests/plugins/ldm/test_clip_bpe.py``), so the ids are the same.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
    r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
"""CLIP's pre-tokenizer pattern (OpenAI ``simple_tokenizer.py``, as transformers writes it)."""


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table, in GPT-2's order (the printable bytes,
    mapped to themselves, then the others mapped past 255): OpenAI's vocabulary is built in
    the order of its values."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class ClipBpe:
    """What :class:`~t2i_ldm.tokenizer.ClipTokenizer` asks of transformers' ``CLIPTokenizer``:
    ``backend_tokenizer`` (the ``tokenizers.Tokenizer``), ``get_vocab()``, ``pad_token_id``."""

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        unk_token: str = END_TOKEN,
        bos_token: str = START_TOKEN,
        eos_token: str = END_TOKEN,
        pad_token: str = END_TOKEN,
    ) -> None:
        from tokenizers import (
            AddedToken,
            Regex,
            Tokenizer,
            decoders,
            normalizers,
            pre_tokenizers,
            processors,
        )
        from tokenizers.models import BPE

        tok = Tokenizer(
            BPE(
                vocab=dict(vocab),
                merges=[tuple(m) for m in merges],
                dropout=None,
                continuing_subword_prefix="",
                end_of_word_suffix="</w>",
                fuse_unk=False,
                unk_token=unk_token,
            )
        )
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        specials = dict.fromkeys((bos_token, eos_token, unk_token, pad_token))
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        tok.post_processor = processors.RobertaProcessing(
            (eos_token, tok.token_to_id(eos_token)),
            (bos_token, tok.token_to_id(bos_token)),
            False,
            False,
        )  # only with add_special_tokens=True, which ClipTokenizer never asks for
        self.backend_tokenizer = tok
        self._args = (dict(vocab), [tuple(m) for m in merges])
        self._specials = dict(
            unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token
        )
        self.pad_token_id = tok.token_to_id(pad_token)

    def get_vocab(self) -> dict[str, Any]:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    def save_pretrained(self, folder: str | os.PathLike) -> Any:
        """Write the files transformers' ``CLIPTokenizer`` writes (``tokenizer.json`` ...), by
        building one (this imports transformers: for exporting, not for generating)."""
        from transformers import CLIPTokenizer

        vocab, merges = self._args
        return CLIPTokenizer(vocab=vocab, merges=merges, **self._specials).save_pretrained(
            str(folder)
        )
