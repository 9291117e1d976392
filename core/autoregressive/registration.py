"""The autoregressive wing's built-ins, registered by :mod:`t2i.builtins`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from t2i.autoregressive.guidance import LogitGuidance
from t2i.autoregressive.sampling import token_sampler_factory


def register_samplers(register: Callable[..., Any]) -> None:
    register(
        "top_k",
        token_sampler_factory,
        aliases=("top_p", "Top-k", "nucleus"),
        description="autoregressive tokens: temperature, top-k, top-p (Holtzman et al. 2020)",
    )


def register_guidance(register: Callable[..., Any]) -> None:
    register(
        "supercondition",
        LogitGuidance,
        aliases=("condition_scale", "logit_cfg"),
        description="classifier-free guidance on next-token logits (DALL-E Mini)",
    )


def register_nodes(register: Callable[..., Any]) -> None:
    from t2i.autoregressive.nodes import register_nodes as nodes

    nodes(register)
