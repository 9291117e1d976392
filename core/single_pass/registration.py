"""The single-pass wing's built-ins, registered by :mod:`t2i.builtins` by import path
(registering imports neither torch nor the wing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from t2i.kinds import GENERATOR
from t2i.registry.lazy import lazy


def register_samplers(register: Callable[..., Any]) -> None:
    register(
        "single_pass",
        lazy("t2i.single_pass.sampling:SinglePass", model_contract=GENERATOR),
        aliases=("one_step",),
        description="z -> G(z, cond), once",
    )


def register_guidance(register: Callable[..., Any]) -> None:
    register(
        "truncation",
        lazy("t2i.single_pass.guidance:Truncation", model_contract=GENERATOR),
        aliases=("truncation_trick",),
        description="truncation trick: z scaled by psi (the guidance scale), BigGAN / StyleGAN",
    )


def register_nodes(register: Callable[..., Any]) -> None:
    register(
        "SampleOnce",
        lazy("t2i.single_pass.nodes:SampleOnce"),
        description="draw z from the seeds and call the generator once (GANs)",
    )
