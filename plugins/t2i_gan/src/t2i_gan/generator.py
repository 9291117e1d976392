"""DF-GAN's ``NetG`` as the core's :class:`~t2i.contracts.Generator`, and a pixel decoder.

``GanGenerator(z, cond)`` checks ``z`` is ``(B, z_dim)`` and the sentence vector
(``cond.pooled``, else ``cond.embeds[:, 0]``) is ``(B, cond_dim)`` before any model work,
then runs ``netG`` once: an image ``(B, 3, S, S)`` in [-1, 1].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from t2i.kinds import GENERATOR
from t2i.payloads import Conditioning, Image, Latent

if TYPE_CHECKING:
    from t2i_gan.models import NetG


class GanGenerator:
    """A :class:`~t2i.contracts.Generator` over a DF-GAN ``NetG`` (DF-GAN, CVPR 2022).

    ``dims`` (``z_dim``, ``cond_dim``, ``image_size``) are read off ``net.config`` unless
    given: a deployment passes them with an exported ``(noise, sentence) -> image`` net.
    """

    model_contract = GENERATOR

    def __init__(self, net: NetG | Any, **dims: int) -> None:
        self.net = net.eval().requires_grad_(False)
        c = getattr(net, "config", None)
        self.z_dim = dims.get("z_dim") or c.z_dim
        self.cond_dim = dims.get("cond_dim") or c.cond_dim
        self.image_size = dims.get("image_size") or c.image_size

    def export_spec(self):
        """``generator``: NetG's ``(noise (B, z_dim), sentence (B, cond_dim)) -> image (B, 3,
        S, S)`` in [-1, 1], one pass; the checks and the sentence choice stay outside."""
        from t2i.contracts import Deployment, ExportedModule, ExportSpec

        weight = next(self.net.parameters())
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(2, self.z_dim, generator=gen).to(weight)
        sentence = torch.randn(2, self.cond_dim, generator=gen).to(weight)
        batch = {0: "batch_size"}
        module = ExportedModule(
            "generator", self.net, (z, sentence), ("noise", "sentence"), ("image",),
            {"noise": batch, "sentence": batch, "image": batch},
        )  # fmt: skip
        dims = {"z_dim": self.z_dim, "cond_dim": self.cond_dim, "image_size": self.image_size}
        return ExportSpec((module,), deployment=Deployment("t2i_gan.generator:deployed", dims))

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
        c = getattr(self.net, "config", None)
        nf = f"nf={c.nf}, " if c is not None else "deployed, "
        return (
            f"GanGenerator({nf}z_dim={self.z_dim}, cond_dim={self.cond_dim}, {self.image_size}px)"
        )


def deployed(modules, *, z_dim: int, cond_dim: int, image_size: int) -> GanGenerator:
    """Factory of :class:`GanGenerator`'s deployment (module ``generator``)."""
    return GanGenerator(modules["generator"], z_dim=z_dim, cond_dim=cond_dim, image_size=image_size)


class PixelDecoder:
    """The identity decoder of pixel-space generators: [-1, 1] -> [0, 1] (factor 1, RGB)."""

    factor, channels = 1, 3

    def decode(self, latent: Latent) -> Image:
        return Image(((latent.samples.float() + 1) / 2).clamp(0, 1))
