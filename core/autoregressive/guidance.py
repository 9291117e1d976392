"""Classifier-free guidance on logits: DALL-E Mini's "super-conditioning".

``logits = u + s (c - u)`` from the conditional and unconditional next-token logits
(Ho & Salimans 2022 applied to an autoregressive model; Crowson's and Dayma's DALL-E Mini
``condition_scale``). Both run in ONE predictor call on the batch ``[c; u]``, whose KV
cache is therefore ``2B`` rows; the wrapper hides that from the sampler.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from t2i.contracts import TOKENS, KVCache
from t2i.payloads import Conditioning


class GuidedTokenPredictor:
    """A :class:`~t2i.contracts.TokenPredictor` with logit guidance applied."""

    def __init__(self, model: Any, uncond: Conditioning, scale: float) -> None:
        self.inner, self.uncond, self.scale = model, uncond, scale
        self.vocab_size, self.bos = model.vocab_size, model.bos

    def __call__(
        self, tokens: torch.Tensor, cond: Conditioning | None, cache: KVCache | None
    ) -> tuple[torch.Tensor, KVCache]:
        both = Conditioning.cat([cond, self.uncond])
        logits, cache = self.inner(torch.cat([tokens, tokens]), both, cache)
        c, u = logits.chunk(2)
        return u + (c - u) * self.scale, cache


@attrs.frozen
class LogitGuidance:
    """Super-conditioning: guidance on next-token logits (registered as ``supercondition``)."""

    model_contract = TOKENS

    def wrap(self, model: Any, *, uncond: Conditioning | None, scale: float) -> Any:
        scale = float(scale)
        if not scale >= 0:
            raise ValueError(f"guidance scale must be >= 0 (1 = no guidance), got {scale}")
        if uncond is None or scale == 1.0:
            return model
        return GuidedTokenPredictor(model, uncond, scale)
