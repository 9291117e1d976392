"""DF-GAN's ``NetG`` as the core's :class:`~t2i.contracts.Generator`, and a pixel decoder.

``GanGenerator(z, cond)`` checks ``z`` is ``(B, z_dim)`` and the sentence vector
(``cond.pooled``, else ``cond.embeds[:, 0]``) is ``(B, cond_dim)`` before any model work,
then runs ``netG`` once: an image ``(B, 3, S, S)`` in [-1, 1]. A word pooling ``netG``
(``word_queries`` > 0) also reads the per-token states ``cond.embeds (B, T, cond_dim)`` and
``cond.mask`` (``gan.minilm_sentence`` with ``words=True``).
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

    ``dims`` (``z_dim``, ``cond_dim``, ``image_size``, ``word_queries``) are read off
    ``net.config`` unless given: a deployment passes them with an exported ``(noise, sentence
    [, words, attention_mask]) -> image`` net.
    """

    model_contract = GENERATOR

    def __init__(self, net: NetG | Any, **dims: int) -> None:
        self.net = net.eval().requires_grad_(False)
        c = getattr(net, "config", None)
        self.z_dim = dims.get("z_dim") or c.z_dim
        self.cond_dim = dims.get("cond_dim") or c.cond_dim
        self.image_size = dims.get("image_size") or c.image_size
        self.word_queries = int(dims.get("word_queries", getattr(c, "word_queries", 0)) or 0)

    def export_spec(self):
        """``generator``: NetG's ``(noise (B, z_dim), sentence (B, cond_dim)) -> image (B, 3,
        S, S)`` in [-1, 1], one pass (a word pooling net also takes ``words (B, T, cond_dim)``
        and ``attention_mask (B, T)`` bool); the checks and the sentence choice stay outside."""
        from t2i.contracts import Deployment, ExportedModule, ExportSpec

        weight = next(self.net.parameters())
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(2, self.z_dim, generator=gen).to(weight)
        sentence = torch.randn(2, self.cond_dim, generator=gen).to(weight)
        batch, seq = {0: "batch_size"}, {0: "batch_size", 1: "sequence_length"}
        inputs, names = (z, sentence), ("noise", "sentence")
        axes = {"noise": batch, "sentence": batch, "image": batch}
        if self.word_queries:
            words = torch.randn(2, 8, self.cond_dim, generator=gen).to(weight)
            mask = torch.ones(2, 8, dtype=torch.bool, device=weight.device)
            mask[1, 5:] = False
            inputs, names = (*inputs, words, mask), (*names, "words", "attention_mask")
            axes.update(words=seq, attention_mask=seq)
        module = ExportedModule("generator", self.net, inputs, names, ("image",), axes)
        dims = {"z_dim": self.z_dim, "cond_dim": self.cond_dim, "image_size": self.image_size}
        if self.word_queries:
            dims["word_queries"] = self.word_queries
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

    def words(self, cond: Conditioning, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A word pooling net's ``(states (B, T, cond_dim), mask (B, T) bool)`` of ``cond``."""
        states, mask = cond.embeds, cond.mask
        if mask is None or states.dim() != 3 or states.shape[::2] != (batch, self.cond_dim):
            raise ValueError(
                f"this GAN generator pools words (word_queries={self.word_queries}): it takes "
                f"per-token states (B, T, {self.cond_dim}) with their mask, got embeds "
                f"{tuple(states.shape)}{'' if mask is not None else ' without a mask'}: encode "
                "with gan.minilm_sentence words=True (the gan-shapes recipe does so for a "
                "word pooling checkpoint)"
            )
        return states, mask.to(device=states.device, dtype=torch.bool)

    def __call__(self, z: torch.Tensor, cond: Conditioning | None) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(
                f"z must be (B, {self.z_dim}) for this generator, got {tuple(z.shape)}"
            )
        sentence = self.sentence(cond, z.shape[0])
        weight = next(self.net.parameters())
        if not self.word_queries:
            return self.net(z.to(weight), sentence.to(weight))
        states, mask = self.words(cond, z.shape[0])
        words = (states.to(weight), mask.to(weight.device))
        return self.net(z.to(weight), sentence.to(weight), *words)

    def __repr__(self) -> str:
        c = getattr(self.net, "config", None)
        nf = f"nf={c.nf}, " if c is not None else "deployed, "
        words = f", word_queries={self.word_queries}" if self.word_queries else ""
        return (
            f"GanGenerator({nf}z_dim={self.z_dim}, cond_dim={self.cond_dim}, {self.image_size}px"
            f"{words})"
        )


def deployed(
    modules, *, z_dim: int, cond_dim: int, image_size: int, word_queries: int = 0
) -> GanGenerator:
    """Factory of :class:`GanGenerator`'s deployment (module ``generator``)."""
    dims = {"z_dim": z_dim, "cond_dim": cond_dim, "image_size": image_size}
    return GanGenerator(modules["generator"], **dims, word_queries=word_queries)


class PixelDecoder:
    """The identity decoder of pixel-space generators: [-1, 1] -> [0, 1] (factor 1, RGB)."""

    factor, channels = 1, 3

    def decode(self, latent: Latent) -> Image:
        return Image(((latent.samples.float() + 1) / 2).clamp(0, 1))
