"""Latent interpolation between two seeds: a strip of frames of one prompt (a GAN's demo).

``z`` of each seed is what the single-pass sampler draws for it
(:func:`t2i.single_pass.sampling.draw_z`); frames walk the great circle between them
(spherical interpolation, as for Gaussian latents in White 2016, "Sampling Generative
Networks"), each truncated like a request (``z`` clamped to the threshold, times ``psi``).
``t2i gan-interpolate PROMPT --seeds A B --frames N -o strip.png`` is the command
(:mod:`t2i_gan.plugin`).
"""

from __future__ import annotations

import os

import torch
from PIL import Image as PILImage

from t2i.payloads import Image


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rows ``slerp(a, b, t_i)`` for ``a``, ``b`` ``(D,)`` and ``t`` ``(N,)`` in [0, 1]."""
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    t = t[:, None]
    if omega.abs() < 1e-6:  # (nearly) parallel: a straight line
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@torch.no_grad()
def interpolate(
    prompt: str,
    seeds: tuple[int, int],
    frames: int,
    *,
    checkpoint: str | os.PathLike | None = None,
    psi: float = 1.0,
    threshold: float | None = 2.0,
) -> PILImage.Image:
    """A horizontal strip of ``frames`` images from ``seeds[0]``'s z to ``seeds[1]``'s."""
    from t2i.single_pass.sampling import draw_z
    from t2i_gan.recipes import create_generator
    from t2i_gan.text import create_text_encoder, create_tokenizer

    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    if not 0 <= psi <= 1:
        raise ValueError(f"truncation psi must be in [0, 1], got {psi}")
    generator = create_generator(checkpoint=checkpoint)
    encoder = create_text_encoder(words=generator.word_queries > 0)
    cond = encoder(create_tokenizer()([prompt])).repeat_to(frames)
    za, zb = draw_z(tuple(seeds), generator.z_dim, device="cpu")
    z = slerp(za, zb, torch.linspace(0, 1, frames))
    if threshold is not None:
        z = z.clamp(-threshold, threshold)
    images = Image(((generator(z * psi, cond) + 1) / 2).clamp(0, 1)).to_pil()
    strip = PILImage.new("RGB", (sum(im.width for im in images), images[0].height))
    for i, im in enumerate(images):
        strip.paste(im, (i * im.width, 0))
    return strip
