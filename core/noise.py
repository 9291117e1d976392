"""Seeded noise: the same seed gives the same noise on any device.

Row ``i`` of a batch is drawn from its own ``torch.Generator("cpu")`` seeded with
``seeds[i]`` (as A1111's and diffusers' CPU noise), so an image depends only on its
seed, not on the batch it was generated in nor on the GPU. The noise is drawn in
float32 and then cast, so float16/bfloat16/float32 runs start from the same numbers.

Ancestral and SDE samplers need fresh noise every step. :class:`BatchNoise` keeps
the per-row generator *after* the initial draw and continues it for step noise
(A1111's ``ImageRNG`` does the same), so step noise is seeded per row too and never
collides with another row's initial noise (which ``seed + offset`` schemes do when
batch seeds are consecutive).

``noise_device="device"`` draws with a generator on the target device instead:
faster, no host-to-device copy, but device-specific numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

NoiseSampler = Callable[[float, float], torch.Tensor]
"""``noise_sampler(sigma, sigma_next) -> Tensor`` of standard normal noise shaped like ``x``."""

NOISE_DEVICES = ("cpu", "device")


def _check(shape: Sequence[int], seeds: Sequence[int], noise_device: str) -> None:
    if len(shape) < 1 or shape[0] != len(seeds):
        raise ValueError(
            f"need one seed per batch row: shape {tuple(shape)} has batch "
            f"{shape[0] if shape else None} but {len(seeds)} seeds were given"
        )
    if noise_device not in NOISE_DEVICES:
        raise ValueError(f"noise_device must be one of {NOISE_DEVICES}, got {noise_device!r}")


class BatchNoise:
    """One generator per batch row; the first draw is the initial noise, later ones step noise.

    Args:
        shape: ``(B, ...)`` shape of the sample.
        seeds: ``B`` integer seeds.
        device, dtype: where and in what dtype noise is returned.
        noise_device: ``"cpu"`` (portable, default) or ``"device"``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        noise_device: str = "cpu",
    ) -> None:
        _check(shape, seeds, noise_device)
        self.shape = tuple(int(s) for s in shape)
        self.seeds = tuple(int(s) for s in seeds)
        self.device = torch.device(device)
        self.dtype = dtype
        gen_device = "cpu" if noise_device == "cpu" else self.device
        self._gen_device = torch.device(gen_device)
        self._generators = [
            torch.Generator(gen_device).manual_seed(s % (1 << 64)) for s in self.seeds
        ]

    def next(self) -> torch.Tensor:
        """Draw the next ``(B, ...)`` standard normal tensor, row ``i`` from generator ``i``."""
        rows = [
            torch.randn(self.shape[1:], generator=g, device=self._gen_device, dtype=torch.float32)
            for g in self._generators
        ]
        noise = torch.stack(rows)  # (B, ...)
        if noise.device != self.device:
            if self.device.type == "cuda":  # pinned + non_blocking: no host stall
                noise = noise.pin_memory().to(self.device, non_blocking=True)
            else:
                noise = noise.to(self.device)
        return noise.to(self.dtype)

    def sampler(self, sigma: float = 0.0, sigma_next: float = 0.0) -> torch.Tensor:
        """A :data:`NoiseSampler`: step noise continuing each row's generator."""
        return self.next()


def seeded_noise(
    shape: Sequence[int],
    seeds: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    noise_device: str = "cpu",
) -> torch.Tensor:
    """Standard normal noise with row ``i`` drawn from a generator seeded with ``seeds[i]``.

    With ``noise_device="cpu"`` (default) row ``i`` equals
    ``torch.randn(shape[1:], generator=torch.Generator("cpu").manual_seed(seeds[i]))``
    on every machine; ``"device"`` uses a generator on ``device``.

    Raises:
        ValueError: ``len(seeds) != shape[0]`` or an unknown ``noise_device``.
    """
    return BatchNoise(shape, seeds, device=device, dtype=dtype, noise_device=noise_device).next()
