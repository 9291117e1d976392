"""DF-GAN's ``NetG`` as the core's :class:`~t2i.contracts.Generator`, and a pixel decoder.

``GanGenerator(z, cond)`` checks ``z`` is ``(B, z_dim)`` and the sentence vector
(``cond.pooled``, else ``cond.embeds[:, 0]``) is ``(B, cond_dim)`` before any model work,
then runs ``netG`` once: an image ``(B, 3, S, S)`` in [-1, 1].
"""

from __future__ import annotations

import torch

from t2i.kinds import GENERATOR
from t2i.payloads import Conditioning, Image, Latent
from t2i_gan.models import NetG


class GanGenerator:
    """A :class:`~t2i.contracts.Generator` over a DF-GAN ``NetG`` (DF-GAN, CVPR 2022)."""

    model_contract = GENERATOR

    def __init__(self, net: NetG) -> None:
        self.net = net.eval().requires_grad_(False)
        self.z_dim = net.config.z_dim
        self.cond_dim = net.config.cond_dim
        self.image_size = net.config.image_size

    def to(self, device=None, dtype=None) -> GanGenerator:
        self.net.to(device=device, dtype=dtype)
        return self

    def sentence(self, cond: Conditioning | None, batch: int) -> torch.Tensor:
        """The ``(batch, cond_dim)`` sentence vector of ``cond``; ValueError if it is not one."""
        if cond is None:
            raise ValueError("the GAN generator needs the prompt's conditioning (none given)")
        s = cond.pooled if cond.pooled is not None else cond.embeds[:, 0]
        if s.shape != (batch, self.cond_dim):
            raise ValueError(
                f"the GAN generator takes a sentence embedding (B, {self.cond_dim}) for a "
                f"batch of {batch}, got {tuple(s.shape)}: pair it with its own text encoder"
            )
        return s

    def __call__(self, z: torch.Tensor, cond: Conditioning | None) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(
                f"z must be (B, {self.z_dim}) for this generator, got {tuple(z.shape)}"
            )
        sentence = self.sentence(cond, z.shape[0])
        weight = next(self.net.parameters())
        return self.net(z.to(weight), sentence.to(weight))

    def __repr__(self) -> str:
        c = self.net.config
        return f"GanGenerator(nf={c.nf}, z_dim={c.z_dim}, cond_dim={c.cond_dim}, {c.image_size}px)"


class PixelDecoder:
    """The identity decoder of pixel-space generators: [-1, 1] -> [0, 1] (factor 1, RGB)."""

    factor, channels = 1, 3

    def decode(self, latent: Latent) -> Image:
        return Image(((latent.samples.float() + 1) / 2).clamp(0, 1))
