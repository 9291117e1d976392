"""The single-pass wing's built-ins, registered by :mod:`t2i.builtins`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from t2i.single_pass.guidance import Truncation
from t2i.single_pass.sampling import SinglePass


def register_samplers(register: Callable[..., Any]) -> None:
    register("single_pass", SinglePass, aliases=("one_step",), description="z -> G(z, cond), once")


def register_guidance(register: Callable[..., Any]) -> None:
    register(
        "truncation",
        Truncation,
        aliases=("truncation_trick",),
        description="truncation trick: z scaled by psi (the guidance scale), BigGAN / StyleGAN",
    )


def register_nodes(register: Callable[..., Any]) -> None:
    from t2i.single_pass.nodes import register_nodes as nodes

    nodes(register)
