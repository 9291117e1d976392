"""The autoregressive wing's built-ins, registered by :mod:`t2i.builtins` by import path
(registering imports neither torch nor the wing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from t2i.kinds import TOKENS
from t2i.registry.lazy import lazy


def register_samplers(register: Callable[..., Any]) -> None:
    description = "autoregressive tokens: temperature, top-k, top-p (Holtzman et al. 2020)"
    register(
        "top_k",
        lazy("t2i.autoregressive.sampling:TokenSampler", model_contract=TOKENS),
        aliases=("Top-k", "top_p", "nucleus"),  # the first is the infotext label
        description=description,
    )


def register_guidance(register: Callable[..., Any]) -> None:
    register(
        "supercondition",
        lazy("t2i.autoregressive.guidance:LogitGuidance", model_contract=TOKENS),
        aliases=("condition_scale", "logit_cfg"),
        description="classifier-free guidance on next-token logits (DALL-E Mini)",
    )


def register_nodes(register: Callable[..., Any]) -> None:
    register(
        "SampleTokens",
        lazy("t2i.autoregressive.nodes:SampleTokens"),
        description="draw image tokens one at a time with a KV-cached token predictor",
    )
