"""Degradations typical of generated images, applied to batches of judge inputs.

Used twice: at random while training the judge (:func:`random_degrade`) so that it reads
blurry, noisy, colour-shifted samples of a small generative model, and with fixed strengths
(:data:`DEGRADATIONS`) to measure its accuracy on degraded renders. Every function takes and
returns float ``(B, 3, H, W)`` tensors in [0, 1] and draws from an explicit ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _uniform(b: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(b, generator=g, device=device)).view(b, 1, 1, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own Gaussian ``sigma`` (``(B,)`` pixels; 0 = unchanged)."""
    b, c, h, w = x.shape
    radius = 3
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).view(b, 1).clamp_min(1e-3)
    k1 = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k1 = k1 / k1.sum(1, keepdim=True)  # (B, 7)
    k1 = k1.repeat_interleave(c, 0)  # (B*C, 7)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k1.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k1.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Translate each image by (dx, dy) pixels (``(B,)`` each), edges replicated."""
    b, _, h, w = x.shape
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * dx.to(x.dtype) / w
    theta[:, 1, 2] = -2 * dy.to(x.dtype) / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(x, brightness, contrast, saturation, gains) -> torch.Tensor:
    """Brightness offset, contrast, saturation ``(B,1,1,1)`` and channel gains ``(B,3,1,1)``."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    grey = x.mean(dim=1, keepdim=True)
    x = grey + (x - grey) * saturation
    return (x * gains).clamp(0, 1)


def random_degrade(x: torch.Tensor, g: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random mix of blur, noise, colour jitter, shifts and re-sampling (training augmentation).

    Args:
        x: ``(B, 3, H, W)`` in [0, 1].
        g: generator on ``x``'s device.
        strength: scales every degradation's range (0 = no change).
    """
    b, dev = x.shape[0], x.device
    on = lambda p: (torch.rand(b, generator=g, device=dev) < p).view(b, 1, 1, 1).to(x.dtype)  # noqa: E731
    s = strength
    # low-resolution look: down to half size and back, for some images
    small = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
    x = torch.lerp(x, F.interpolate(small, size=x.shape[-2:], mode="bilinear"), on(0.2))
    x = torch.lerp(
        x, shift(x, *(torch.randint(-3, 4, (2, b), generator=g, device=dev) * s)), on(0.5)
    )
    sigma = torch.rand(b, generator=g, device=dev) * 1.3 * s
    x = torch.lerp(x, gaussian_blur(x, sigma), on(0.5))
    x = colour_jitter(
        x,
        brightness=_uniform(b, -0.08 * s, 0.08 * s, g, dev),
        contrast=_uniform(b, 1 - 0.2 * s, 1 + 0.2 * s, g, dev),
        saturation=_uniform(b, 1 - 0.25 * s, 1 + 0.2 * s, g, dev),
        gains=1 + (torch.rand(b, 3, 1, 1, generator=g, device=dev) - 0.5) * 0.14 * s,
    )
    noise_std = _uniform(b, 0, 0.07 * s, g, dev) * on(0.5)
    x = x + noise_std * torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype)
    return x.clamp(0, 1)


#: Fixed degradations for the "degraded renders" accuracy (name -> fn(x, generator)).
DEGRADATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "blur1.0": lambda x, g: gaussian_blur(x, torch.full((x.shape[0],), 1.0, device=x.device)),
    "noise0.05": lambda x, g: (
        x + 0.05 * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    ).clamp(0, 1),
    "contrast0.8+bright0.05": lambda x, g: colour_jitter(
        x, 0.05, 0.8, 1.0, torch.ones(1, 3, 1, 1, device=x.device)
    ),
    "shift2px": lambda x, g: shift(
        x,
        torch.full((x.shape[0],), 2.0, device=x.device),
        torch.full((x.shape[0],), -2.0, device=x.device),
    ),
    "lowres32": lambda x, g: F.interpolate(
        F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True),
        size=x.shape[-2:],
        mode="bilinear",
    ),
    "all_random": lambda x, g: random_degrade(x, g, 1.0),
}
