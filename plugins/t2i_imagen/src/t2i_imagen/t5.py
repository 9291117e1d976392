"""IF's frozen text encoder: T5 v1.1 (XXL for IF) through transformers' ``T5EncoderModel``.

As ``IFPipeline.encode_prompt`` without caption cleaning: a prompt is lower-cased and
stripped, tokenized to exactly 77 tokens (IF was trained with 77; longer prompts are cut,
with a warning), and encoded with its padding mask; the UNet reads all 77 states (IF's
UNet takes no mask), so the conditioning carries the mask for models that want it.
Frozen: eval mode, no gradients, weights never trained here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import structlog
import torch

from t2i.payloads import Conditioning, Tokens

log = structlog.get_logger("t2i_imagen.t5")

MAX_LENGTH = 77


def preprocess(text: str) -> str:
    """IF's ``_text_preprocessing`` with ``clean_caption=False``."""
    return text.lower().strip()


class T5Tokenizer:
    """:class:`t2i.contracts.Tokenizer`: ids + mask, ``(B, 77)``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        from transformers import AutoTokenizer

        path = Path(folder)
        try:
            self.backend = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, ImportError) as exc:
            raise ValueError(
                f"cannot load the T5 tokenizer in {path}: {exc} (a slow spiece.model tokenizer "
                "needs `pip install sentencepiece`)"
            ) from exc

    def __call__(self, texts: Sequence[str] | str) -> Tokens:
        texts = [texts] if isinstance(texts, str) else list(texts)
        texts = [preprocess(t) for t in texts]
        batch = self.backend(
            texts, padding="max_length", max_length=MAX_LENGTH, truncation=True,
            add_special_tokens=True, return_tensors="pt",
        )  # fmt: skip
        for text in texts:
            if len(self.backend(text)["input_ids"]) > MAX_LENGTH:
                log.warning("prompt_truncated", tokens=MAX_LENGTH, prompt=text[:60])
        return Tokens(ids=batch["input_ids"], mask=batch["attention_mask"].bool())


class T5TextEncoder:
    """:class:`t2i.contracts.TextEncoder`: ``Tokens -> Conditioning(embeds (B, 77, d_model),
    mask)``, computed with the padding mask, without autograd."""

    def __init__(self, model) -> None:
        self.model = model.eval().requires_grad_(False)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, dtype=None, variant=None) -> T5TextEncoder:
        from transformers import T5EncoderModel

        kwargs = {"local_files_only": True}
        if variant:
            kwargs["variant"] = variant
        if dtype is not None:
            kwargs["dtype"] = dtype
        return cls(T5EncoderModel.from_pretrained(str(folder), **kwargs))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.d_model)

    def to(self, device=None, dtype=None) -> T5TextEncoder:
        self.model.to(device=device)
        return self

    def __call__(self, tokens: Tokens) -> Conditioning:
        ids = tokens.ids.to(self.device)
        mask = (
            tokens.mask
            if tokens.mask is not None
            else torch.ones_like(tokens.ids, dtype=torch.bool)
        )
        mask = mask.to(self.device)
        with torch.no_grad():
            states = self.model(input_ids=ids, attention_mask=mask.long())[0]
        return Conditioning(embeds=states, mask=mask)

    def __repr__(self) -> str:
        c = self.model.config
        return f"T5TextEncoder(layers={c.num_layers}, width={c.d_model}, frozen)"
