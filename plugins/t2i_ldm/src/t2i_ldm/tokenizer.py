"""CLIP BPE tokenizer with the Stable Diffusion web UI's prompt handling.

The byte-level BPE itself is ``tokenizers``' pipeline of transformers' ``CLIPTokenizer``
(:mod:`t2i_ldm.clip_bpe` builds it for in-memory vocabularies without importing transformers;
folders load through ``CLIPTokenizer.from_pretrained``). This
module adds what Stable Diffusion front ends do around it (AUTOMATIC1111,
``modules/sd_hijack_clip.py``, documented behaviour; independent implementation):

- emphasis weights per token from :func:`t2i.prompts.parse_prompt_attention`; each weighted
  piece of the prompt is tokenized on its own, as the web UI does;
- 75-token chunks, each wrapped as ``<|startoftext|> tokens <|endoftext|>`` and padded to 77;
  ``BREAK`` ends a chunk early; a prompt over 75 tokens gives several chunks, and every prompt
  of a batch is padded with empty chunks to the batch's largest chunk count;
- the empty prompt's chunk rides along as ``Tokens.pad_chunk``: the text encoder encodes it,
  and classifier-free guidance lengthens the shorter of prompt / negative with whole copies
  of it (A1111's ``pad_cond_uncond``), never with zeros;
- "comma padding backtrack": when a chunk fills up less than ``comma_padding_backtrack`` tokens
  after a comma, the text after that comma moves to the next chunk (web UI default 20);
- textual-inversion embeddings (:mod:`t2i_ldm.embeddings`): a prompt word naming one becomes
  its vectors' ids (after the vocabulary); an embedding is never split across chunks;
- padding after the end token: ``<|endoftext|>`` for SD1's CLIP ViT-L/14, id 0 (``"!"``) for
  SD2's OpenCLIP ViT-H/14 (``open_clip.tokenize`` pads with zeros).

Vocabulary sources, never downloaded: a diffusers ``tokenizer/`` folder (``vocab.json`` +
``merges.txt``) or OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` merges list (shipped inside the
``open_clip_torch`` and ``clip`` packages), from which the vocabulary is rebuilt exactly as
OpenAI's ``simple_tokenizer.py`` does.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import structlog
import torch

from t2i.payloads import Tokens
from t2i.prompts import is_break, parse_prompt_attention
from t2i_ldm.clip_bpe import ClipBpe, bytes_to_unicode
from t2i_ldm.embeddings import EmbeddingLibrary

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

log = structlog.get_logger(__name__)

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
CHUNK_LENGTH = 75
"""Prompt tokens per chunk; with the start and end tokens a chunk is 77 long."""
OPENAI_NUM_MERGES = 49152 - 256 - 2
"""Merges OpenAI's CLIP uses from ``bpe_simple_vocab_16e6.txt.gz`` (48,894): vocabulary 49,408."""


@attrs.frozen
class _Chunk:
    """Up to :data:`CHUNK_LENGTH` prompt tokens and their weights (no start/end tokens)."""

    ids: list[int]
    weights: list[float]


def openai_clip_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """The CLIP vocabulary that OpenAI's ``simple_tokenizer.py`` builds from a merges list.

    Order: the 256 byte characters of GPT-2's byte-to-unicode table, the same with ``</w>``,
    one token per merge (the two parts joined), then ``<|startoftext|>`` and ``<|endoftext|>``.
    With the 48,894 released merges this is the 49,408-token vocabulary of ``vocab.json``.
    """
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(pair) for pair in merges]
    tokens += [START_TOKEN, END_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("the merges list produces duplicate tokens: it is not a CLIP BPE list")
    return vocab


def read_bpe_merges(path: str | os.PathLike, num_merges: int = OPENAI_NUM_MERGES) -> list:
    """Read a merges list in ``bpe_simple_vocab_16e6.txt[.gz]`` or ``merges.txt`` form.

    The first line is a header and is skipped (as OpenAI's loader does); then one merge per line,
    two space-separated parts; at most ``num_merges`` are kept.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not two space-separated parts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BPE merges file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    lines = raw.decode("utf-8").split("\n")[1:]
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=2):
        if len(merges) == num_merges:
            break
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: a merge is two space-separated parts, got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_FILE_ENV = "T2I_CLIP_BPE"
"""Environment variable naming a ``bpe_simple_vocab_16e6.txt.gz`` to use."""


def find_bpe_file() -> Path | None:
    """Locate OpenAI's CLIP merges list on this machine, without downloading anything.

    Looks at ``$T2I_CLIP_BPE``, then inside the installed ``open_clip`` (``open_clip_torch``)
    and ``clip`` packages (found without importing them), then at the copy this plugin ships
    (``t2i_ldm/data``, MIT, see its NOTICE.txt). None when there is none.
    """
    candidates: list[Path] = []
    if os.environ.get(BPE_FILE_ENV):
        candidates.append(Path(os.environ[BPE_FILE_ENV]))
    for package in ("open_clip", "clip"):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(Path(folder) / BPE_FILE_NAME)
    candidates.append(Path(__file__).parent / "data" / BPE_FILE_NAME)
    return next((c for c in candidates if c.is_file()), None)


class ClipTokenizer:
    """CLIP BPE tokenizer giving web-UI-style chunked, weighted :class:`t2i.payloads.Tokens`.

    Implements :class:`t2i.contracts.Tokenizer`. Output of ``tokenizer(["a", "b"])``:
    ``ids`` ``(B, 77*n)`` int64, ``weights`` ``(B, 77*n)`` float32 (1.0 on start/end/padding),
    ``mask`` ``(B, 77*n)`` bool, True on the start token, the prompt tokens and the end token.

    Args:
        backend: a transformers ``CLIPTokenizer`` that does the BPE (its truncation and padding
            are switched off: chunking is done here).
        pad_id: id written after the end token; None uses the end token (SD1). SD2: 0.
        parse_emphasis: read ``(word:1.2)``-style weights (False: brackets are literal text and
            every weight is 1.0, the web UI's emphasis mode "None").
        comma_padding_backtrack: see the module docstring; 0 turns it off.
        start_token, end_token, comma_token: the backend's special tokens; CLIP's by default.
            Any transformers fast tokenizer chunks the same way with its own (BERT's MiniLM:
            ``"[CLS]"``, ``"[SEP]"``, ``","``, see :mod:`t2i_ldm.minilm`).
    """

    chunk_length = CHUNK_LENGTH
    model_max_length = CHUNK_LENGTH + 2

    def __init__(
        self,
        backend: CLIPTokenizer | ClipBpe,
        *,
        pad_id: int | None = None,
        parse_emphasis: bool = True,
        comma_padding_backtrack: int = 20,
        start_token: str = START_TOKEN,
        end_token: str = END_TOKEN,
        comma_token: str = ",</w>",
        embeddings: EmbeddingLibrary | None = None,
    ) -> None:
        vocab = backend.get_vocab()
        missing = [t for t in (start_token, end_token) if t not in vocab]
        if missing:
            raise ValueError(f"the vocabulary lacks the special tokens {missing}")
        if comma_padding_backtrack < 0 or comma_padding_backtrack > CHUNK_LENGTH:
            raise ValueError(
                f"comma_padding_backtrack must be in [0, {CHUNK_LENGTH}], "
                f"got {comma_padding_backtrack}"
            )
        self.backend = backend
        # chunking and padding are ours: a folder's tokenizer.json must not truncate at 77
        backend.backend_tokenizer.no_truncation()
        backend.backend_tokenizer.no_padding()
        self.vocab_size = len(vocab)
        self.bos_id = vocab[start_token]
        self.eos_id = vocab[end_token]
        self.pad_id = self.eos_id if pad_id is None else int(pad_id)
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(
                f"pad_id {self.pad_id} is outside the vocabulary (0..{len(vocab) - 1})"
            )
        self.comma_id = vocab.get(comma_token)
        self.parse_emphasis = parse_emphasis
        self.comma_padding_backtrack = comma_padding_backtrack
        self.embeddings = embeddings
        self._triggers = self._embedding_triggers(embeddings)

    def _embedding_triggers(self, library: EmbeddingLibrary | None) -> list[tuple]:
        """``(name's BPE ids, the embedding's token ids)`` per embedding, longest name first;
        a skipped file's name maps to the error that refuses a prompt using it."""
        if library is None:
            return []
        targets: dict[str, list[int] | Exception] = dict(library.ids(self.vocab_size))
        targets.update(library.skipped)
        names = list(targets)
        triggers = []
        for name, tokens in zip(names, self.encode_text(names)):
            ids = targets[name]
            if isinstance(ids, list) and len(ids) > CHUNK_LENGTH:
                raise ValueError(
                    f"embedding {name!r} has {len(ids)} vectors; a chunk holds {CHUNK_LENGTH}"
                )
            if tokens:
                triggers.append((tuple(tokens), name, ids))
        return sorted(triggers, key=lambda t: -len(t[0]))

    def _with_embeddings(self, tokens: list[int]) -> list[int | list[int]]:
        """``tokens`` with each embedding's name replaced by the list of its vector ids.

        Raises:
            ValueError: the tokens name an embedding whose file was skipped (the reason).
        """
        if not self._triggers:
            return list(tokens)
        out: list[int | list[int]] = []
        i = 0
        while i < len(tokens):
            for bpe, name, ids in self._triggers:
                if tuple(tokens[i : i + len(bpe)]) == bpe:
                    if isinstance(ids, Exception):
                        raise ValueError(
                            f"the prompt uses the embedding {name!r}, whose file was skipped: {ids}"
                        )
                    out.append(list(ids))
                    i += len(bpe)
                    break
            else:
                out.append(tokens[i])
                i += 1
        return out

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_vocab_and_merges(
        cls, vocab: dict[str, int], merges: Sequence[tuple[str, str]], **options
    ) -> ClipTokenizer:
        """Build from an in-memory vocabulary and merges list (``options`` as in ``__init__``)."""
        return cls(ClipBpe(vocab, merges), **options)

    @classmethod
    def from_bpe_file(
        cls, path: str | os.PathLike, *, num_merges: int = OPENAI_NUM_MERGES, **options
    ) -> ClipTokenizer:
        """Build from OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (or the uncompressed list).

        For SD2 pass ``pad_id=0``. ``options`` as in ``__init__``.
        """
        merges = read_bpe_merges(path, num_merges)
        log.debug("clip_tokenizer.bpe_file", path=str(path), merges=len(merges))
        return cls.from_vocab_and_merges(openai_clip_vocab(merges), merges, **options)

    @classmethod
    def from_installed_bpe(cls, **options) -> ClipTokenizer:
        """Build from the merges list :func:`find_bpe_file` finds (``options`` as in ``__init__``).

        Raises:
            FileNotFoundError: none on this machine; the message says how to get one.
        """
        path = find_bpe_file()
        if path is None:
            raise FileNotFoundError(
                f"no {BPE_FILE_NAME} found: `pip install open_clip_torch` (it ships the file), "
                f"or set {BPE_FILE_ENV} to its path, or load the checkpoint's tokenizer/ folder"
            )
        return cls.from_bpe_file(path, **options)

    @classmethod
    def from_folder(cls, path: str | os.PathLike, **options) -> ClipTokenizer:
        """Build from a diffusers ``tokenizer/`` folder (``vocab.json`` + ``merges.txt``, or
        ``tokenizer.json``).

        The pad token comes from the folder's ``special_tokens_map.json`` /
        ``tokenizer_config.json`` (SD2's says ``"!"``, id 0) unless ``pad_id`` is passed.
        """
        path = Path(path)
        missing = [n for n in ("vocab.json", "merges.txt") if not (path / n).is_file()]
        if missing and (path / "tokenizer.json").is_file():
            missing = []  # transformers >= 5 writes the fast tokenizer's tokenizer.json only
        if missing:
            raise FileNotFoundError(
                f"{path} is not a CLIP tokenizer folder: missing {', '.join(missing)} "
                "(point at the checkpoint's 'tokenizer' subfolder)"
            )
        from transformers import CLIPTokenizer

        backend = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
        if "pad_id" not in options:
            pad = backend.pad_token_id
            options["pad_id"] = None if pad is None else int(pad)
        return cls(backend, **options)

    # -- tokenizing ----------------------------------------------------------------------

    def __call__(self, texts: Sequence[str] | str) -> Tokens:
        """Tokenize a batch of prompts into chunks of 77 tokens (see the class docstring)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty: pass at least one prompt (an empty prompt is '')")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        per_prompt = [self.chunk_prompt(text) for text in texts]
        n_chunks = max(len(chunks) for chunks in per_prompt)
        width = n_chunks * self.model_max_length
        ids = torch.full((len(texts), width), self.pad_id, dtype=torch.int64)
        weights = torch.ones((len(texts), width), dtype=torch.float32)
        mask = torch.zeros((len(texts), width), dtype=torch.bool)
        empty = _Chunk([], [])
        for row, chunks in enumerate(per_prompt):
            chunks = chunks + [empty] * (n_chunks - len(chunks))
            for index, chunk in enumerate(chunks):
                start = index * self.model_max_length
                n = len(chunk.ids)
                ids[row, start] = self.bos_id
                ids[row, start + 1 : start + 1 + n] = torch.tensor(chunk.ids, dtype=torch.int64)
                ids[row, start + 1 + n] = self.eos_id
                weights[row, start + 1 : start + 1 + n] = torch.tensor(chunk.weights)
                mask[row, start : start + n + 2] = True
        return Tokens(ids=ids, weights=weights, mask=mask, pad_chunk=self.empty_chunk_ids())

    def empty_chunk_ids(self) -> torch.Tensor:
        """``(1, 77)`` ids of the empty prompt: start, end, then padding (as ``self("")``)."""
        ids = torch.full((1, self.model_max_length), self.pad_id, dtype=torch.int64)
        ids[0, 0], ids[0, 1] = self.bos_id, self.eos_id
        return ids

    def encode_text(self, texts: Sequence[str]) -> list[list[int]]:
        """Plain BPE ids of each text, no special tokens, no emphasis parsing."""
        encodings = self.backend.backend_tokenizer.encode_batch(
            list(texts), add_special_tokens=False
        )
        return [list(e.ids) for e in encodings]

    def count_tokens(self, text: str) -> int:
        """Prompt tokens of ``text`` after emphasis parsing (the web UI's "n/75" counter)."""
        return sum(len(c.ids) for c in self.chunk_prompt(text))

    def chunk_prompt(self, text: str) -> list[_Chunk]:
        """Split one prompt into chunks of at most 75 weighted tokens (at least one chunk)."""
        if self.parse_emphasis:
            segments = parse_prompt_attention(text)
        else:
            segments = [(text, 1.0)]
        token_lists = self.encode_text([t for t, _ in segments])
        chunks: list[_Chunk] = []
        ids: list[int] = []
        weights: list[float] = []
        last_comma = -1  # position in `ids` of the last comma, -1 for none

        def finish(keep: int | None = None) -> None:
            """Close the chunk with the first `keep` tokens; the rest start the next one."""
            nonlocal ids, weights, last_comma
            keep = len(ids) if keep is None else keep
            chunks.append(_Chunk(ids[:keep], weights[:keep]))
            ids, weights, last_comma = ids[keep:], weights[keep:], -1

        for segment, token_ids in zip(segments, token_lists):
            if self.parse_emphasis and is_break(segment):
                finish()
                continue
            weight = segment[1]
            for token in self._with_embeddings(token_ids):
                if isinstance(token, list):  # an embedding's vectors: never split (A1111)
                    if len(ids) + len(token) > CHUNK_LENGTH:
                        finish()
                    ids.extend(token)
                    weights.extend([weight] * len(token))
                    continue
                if token == self.comma_id:
                    last_comma = len(ids)
                elif (
                    self.comma_padding_backtrack
                    and len(ids) == CHUNK_LENGTH
                    and last_comma >= 0
                    and len(ids) - last_comma <= self.comma_padding_backtrack
                ):
                    finish(keep=last_comma + 1)
                if len(ids) == CHUNK_LENGTH:
                    finish()
                ids.append(token)
                weights.append(weight)
        if ids or not chunks:
            finish()
        return chunks

    def __repr__(self) -> str:
        return (
            f"ClipTokenizer(vocab_size={self.vocab_size}, bos={self.bos_id}, eos={self.eos_id}, "
            f"pad={self.pad_id})"
        )
