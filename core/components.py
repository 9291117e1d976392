"""Contracts of the component kinds, so that parts from different plugins fit.

These are structural protocols: a plugin's class satisfies one by having the
methods, not by inheriting. See ``DESIGN.md`` ("The six component kinds").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import torch

from t2i.payloads import Conditioning, Image, Latent, Tokens

KINDS: tuple[str, ...] = (
    "tokenizer",
    "text_encoder",
    "denoiser",
    "sampler",
    "schedule",
    "guidance",
    "decoder",
    "recipe",
    "node",
    "trainer",
)
"""Every registrable kind: DESIGN.md's component kinds, schedules, recipes, node types, trainers."""


@runtime_checkable
class Tokenizer(Protocol):
    """Text -> token ids (+ a weight per token)."""

    def __call__(self, texts: Sequence[str]) -> Tokens: ...


@runtime_checkable
class TextEncoder(Protocol):
    """Token ids -> conditioning tensors."""

    def __call__(self, tokens: Tokens) -> Conditioning: ...


@runtime_checkable
class KarrasDenoiser(Protocol):
    """Diffusion denoiser in the Karras et al. (2022) form: ``D(x, sigma, cond) -> x0``.

    ``sigma`` is a ``(B,)`` tensor. ``sigma_min``/``sigma_max`` bound the trained
    range; discrete-time models also expose ``sigmas``, their ascending trained
    sigma table, which schedules such as ``leading`` or ``simple`` index into.
    """

    sigma_min: float
    sigma_max: float

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning
    ) -> torch.Tensor: ...


@runtime_checkable
class Decoder(Protocol):
    """Sample space -> pixels. ``factor`` pixels per latent cell, ``channels`` latent channels."""

    factor: int
    channels: int

    def decode(self, latent: Latent) -> Image: ...


@runtime_checkable
class Guidance(Protocol):
    """Combines conditional and unconditional predictions by wrapping a model.

    ``wrap`` returns a model of the same contract as the one it wraps.
    """

    def wrap(self, model: Any, *, uncond: Conditioning | None, scale: float) -> Any: ...


@attrs.frozen(eq=False)
class SampleJob:
    """Everything a sampler needs for one batch.

    Attributes:
        model: the denoiser component (diffusion denoiser, token predictor or generator).
        positive: conditioning of the prompt(s), batch B or 1.
        negative: conditioning of the negative prompt(s), or None.
        shape: shape of the sample to draw, batch first (latent, token grid or ``z``).
        seeds: one seed per batch row; the sampler draws all randomness from them.
        steps: number of sampling steps (ignored by single-pass samplers).
        cfg_scale: guidance scale.
        guidance: the guidance component instance.
        schedule: a schedule name, or None for the sampler's default.
        init: img2img start sample, or None to start from noise.
        strength: img2img denoising strength in [0, 1].
        eta: stochasticity for samplers that have it (DDIM eta, ancestral s_noise ...).
        top_k, top_p, temperature: options of token samplers.
        device, dtype: where the model runs.
        noise_device: "cpu" (default; same image on any device) or "device".
        callback: ``callback(step, total)`` after every step; it may raise to cancel.
        registry: the component registry the job's parts came from, for samplers that look up
            more components by name (schedules); None means the process-wide one.
    """

    model: Any
    positive: Conditioning | None
    negative: Conditioning | None
    shape: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: int = 20
    cfg_scale: float = 7.0
    guidance: Any = None
    schedule: str | None = None
    init: Latent | None = None
    strength: float = 1.0
    eta: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    temperature: float = 1.0
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    noise_device: str = "cpu"
    callback: Callable[[int, int], None] | None = None
    registry: Any = None


@runtime_checkable
class Sampler(Protocol):
    """The loop that turns noise into a sample by calling the model.

    Diffusion samplers, autoregressive token samplers and single-pass samplers all
    take a :class:`SampleJob` and return a :class:`Latent` (or :class:`Tokens`).
    """

    def sample(self, job: SampleJob) -> Latent | Tokens: ...
