"""IF's frozen text encoder: T5 v1.1 (XXL for IF) through transformers' ``T5EncoderModel``.

As ``IFPipeline.encode_prompt`` without caption cleaning: a prompt is lower-cased and
stripped, tokenized to exactly 77 tokens (IF was trained with 77; longer prompts are cut,
with a warning), and encoded with its padding mask; the UNet reads all 77 states (IF's
UNet takes no mask), so the conditioning carries the mask for models that want it.
Frozen: eval mode, no gradients, weights never trained here.

:meth:`T5TextEncoder.export_spec` exports the encoder as ``text_encoder`` (Optimum's T5
encoder boundary: ``input_ids``, ``attention_mask`` -> ``last_hidden_state``, dynamic batch
and sequence); :func:`t2i_imagen.deployed.t5_text_encoder` rebuilds the component around it.
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


class T5EncoderExport(torch.nn.Module):
    """``(input_ids, attention_mask) -> last_hidden_state`` of a ``T5EncoderModel`` (int64
    mask, 1 on tokens): the exported ``text_encoder``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask)[0]


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

    def export_spec(self):
        """The encoder as ``text_encoder`` on two 77-token rows (one padded), with its
        deployment (:func:`t2i_imagen.deployed.t5_text_encoder`)."""
        from t2i.contracts import Deployment, ExportedModule, ExportSpec

        config = self.model.config
        pad = int(config.pad_token_id or 0)
        words = torch.arange(2, 7) % int(config.vocab_size)  # 5 and 3 tokens, then padding
        ids = torch.full((2, MAX_LENGTH), pad, dtype=torch.int64)
        ids[0, :5], ids[1, :3] = words, words[:3]
        mask = (torch.arange(MAX_LENGTH) < torch.tensor([[5], [3]])).long()
        axes = {0: "batch", 1: "sequence"}
        module = ExportedModule(
            "text_encoder",
            T5EncoderExport(self.model),
            (ids.to(self.device), mask.to(self.device)),
            ("input_ids", "attention_mask"),
            ("last_hidden_state",),
            {"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
        )
        deployment = Deployment(
            "t2i_imagen.deployed:t5_text_encoder", {"hidden_size": self.hidden_size}
        )
        return ExportSpec((module,), deployment=deployment)

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
