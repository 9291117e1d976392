"""Guidance for generators: the truncation trick.

Sampling ``z`` closer to the mode trades diversity for fidelity (Brock et al. 2019,
BigGAN, section 3.1; Karras et al. 2019, StyleGAN, ``psi``). With ``z ~ N(0, I)`` the mode
is 0, so :class:`Truncation` scales ``z`` by ``psi`` (the request's guidance scale):
``psi = 1`` is the generator alone, ``psi -> 0`` the mean image. ``threshold`` optionally
also clamps each coordinate to ``[-threshold, threshold]`` first (a deterministic
stand-in for BigGAN's resampling, so an image still depends on its seed only).
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from t2i.contracts import GENERATOR
from t2i.payloads import Conditioning


class TruncatedGenerator:
    """A :class:`~t2i.contracts.Generator` whose ``z`` is truncated before each call."""

    def __init__(self, model: Any, psi: float, threshold: float | None) -> None:
        self.inner, self.psi, self.threshold = model, psi, threshold
        self.z_dim = model.z_dim

    def __call__(self, z: torch.Tensor, cond: Conditioning | None) -> torch.Tensor:
        if self.threshold is not None:
            z = z.clamp(-self.threshold, self.threshold)
        return self.inner(z * self.psi, cond)


@attrs.frozen
class Truncation:
    """The truncation trick (registered as ``truncation``); the scale is ``psi`` in [0, 1]."""

    model_contract = GENERATOR

    threshold: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError(f"threshold must be > 0 (or None), got {self.threshold}")

    def wrap(self, model: Any, *, uncond: Conditioning | None, scale: float) -> Any:
        psi = float(scale)
        if not 0 <= psi <= 1:
            raise ValueError(f"truncation psi (the guidance scale) must be in [0, 1], got {psi}")
        if psi == 1.0 and self.threshold is None:
            return model
        return TruncatedGenerator(model, psi, self.threshold)
