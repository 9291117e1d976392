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

Variation seeds (A1111's ``subseed`` / ``subseed_strength`` and ``seed_resize_from_w/h``,
``modules/rng.py`` ``ImageRNG.first``; rule reimplemented from its documented behaviour):
row ``i``'s initial noise is ``slerp(strength, noise(seed), noise(subseeds[i]))``; with a
"resize from" size the seed's and subseed's noise is drawn at that size and placed centred
(cropped or surrounded) on the row's own noise of the real size. Step noise is unchanged:
the row's generator continues after one draw of the real shape either way.
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


def slerp_a1111(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's ``slerp`` of two ``(C, H, W)`` noises: ``val`` 0 gives ``low``, 1 ``high``.

    As A1111 (``modules/rng.py``) it normalises along axis 1 (each channel's column over the
    rows), and falls back to the linear ``low * val + high * (1 - val)`` (A1111's weights,
    as written) when the mean cosine exceeds 0.9995.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (
        torch.sin(val * omega) / so
    ).unsqueeze(1) * high


def place_centred(canvas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``noise (C, h, w)`` centred on ``canvas (C, H, W)`` (cropped where it is larger),
    offsets ``(H - h) // 2`` and ``(W - w) // 2`` as A1111's seed resize."""
    out = canvas.clone()
    dy, dx = (canvas.shape[1] - noise.shape[1]) // 2, (canvas.shape[2] - noise.shape[2]) // 2
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    ty, tx = max(dy, 0), max(dx, 0)
    sy, sx = max(-dy, 0), max(-dx, 0)
    out[:, ty : ty + h, tx : tx + w] = noise[:, sy : sy + h, sx : sx + w]
    return out


class BatchNoise:
    """One generator per batch row; the first draw is the initial noise, later ones step noise.

    Args:
        shape: ``(B, ...)`` shape of the sample.
        seeds: ``B`` integer seeds.
        device, dtype: where and in what dtype noise is returned.
        noise_device: ``"cpu"`` (portable, default) or ``"device"``.
        subseeds, subseed_strength: the variation seed of each row and the slerp weight
            toward its noise (0 = none); see the module docstring.
        resize_from: ``(h, w)`` in sample cells to draw the seed noise at (A1111's "resize
            seed from", divided by the decoder's factor), or None.
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        noise_device: str = "cpu",
        subseeds: Sequence[int] = (),
        subseed_strength: float = 0.0,
        resize_from: tuple[int, int] | None = None,
    ) -> None:
        _check(shape, seeds, noise_device)
        self.shape = tuple(int(s) for s in shape)
        self.seeds = tuple(int(s) for s in seeds)
        self.device = torch.device(device)
        self.dtype = dtype
        gen_device = "cpu" if noise_device == "cpu" else self.device
        self._gen_device = torch.device(gen_device)
        self._generators = [self._generator(s) for s in self.seeds]
        self._variation = _check_variation(self.shape, subseeds, subseed_strength, resize_from)
        self._first = True

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(self._gen_device).manual_seed(int(seed) % (1 << 64))

    def _randn(self, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        return torch.randn(
            tuple(shape), generator=generator, device=self._gen_device, dtype=torch.float32
        )

    def _first_row(self, i: int) -> torch.Tensor:
        """Row ``i``'s initial noise with its variation seed and seed resize applied."""
        subseeds, strength, resize_from = self._variation
        shape = self.shape[1:]
        noise_shape = shape if resize_from is None else (shape[0], *resize_from)
        if noise_shape == shape:
            noise = self._randn(shape, self._generators[i])
        else:
            noise = self._randn(noise_shape, self._generator(self.seeds[i]))
        if strength:
            sub = self._randn(noise_shape, self._generator(subseeds[i]))
            noise = slerp_a1111(strength, noise, sub)
        if noise_shape != shape:
            noise = place_centred(self._randn(shape, self._generators[i]), noise)
        return noise

    def next(self) -> torch.Tensor:
        """Draw the next ``(B, ...)`` standard normal tensor, row ``i`` from generator ``i``
        (the first draw with the variation seeds, if any)."""
        if self._first and self._variation[1:] != (0.0, None):
            rows = [self._first_row(i) for i in range(len(self.seeds))]
        else:
            rows = [self._randn(self.shape[1:], g) for g in self._generators]
        self._first = False
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


def _check_variation(
    shape: tuple[int, ...],
    subseeds: Sequence[int],
    strength: float,
    resize_from: tuple[int, int] | None,
) -> tuple[tuple[int, ...], float, tuple[int, int] | None]:
    """The variation options checked: one subseed per row when the strength is not 0, a
    strength in [0, 1], a resize size of two positive cells on a ``(B, C, H, W)`` sample."""
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"subseed_strength must be in [0, 1], got {strength}")
    subseeds = tuple(int(s) for s in subseeds)
    if strength and len(subseeds) != shape[0]:
        raise ValueError(f"need one subseed per batch row: batch {shape[0]}, got {subseeds}")
    if resize_from is not None:
        resize_from = tuple(int(v) for v in resize_from)
        if len(shape) != 4 or len(resize_from) != 2 or min(resize_from) < 1:
            raise ValueError(
                f"resize_from must be (h, w) >= 1 cells on a (B, C, H, W) sample, got "
                f"{resize_from} for shape {shape}"
            )
        if resize_from == shape[2:]:
            resize_from = None
    return subseeds, strength, resize_from


def seeded_noise(
    shape: Sequence[int],
    seeds: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    noise_device: str = "cpu",
    **variation,
) -> torch.Tensor:
    """Standard normal noise with row ``i`` drawn from a generator seeded with ``seeds[i]``.

    With ``noise_device="cpu"`` (default) row ``i`` equals
    ``torch.randn(shape[1:], generator=torch.Generator("cpu").manual_seed(seeds[i]))``
    on every machine; ``"device"`` uses a generator on ``device``. ``variation``:
    ``subseeds``, ``subseed_strength``, ``resize_from`` of :class:`BatchNoise`.

    Raises:
        ValueError: ``len(seeds) != shape[0]`` or an unknown ``noise_device``.
    """
    return BatchNoise(
        shape, seeds, device=device, dtype=dtype, noise_device=noise_device, **variation
    ).next()
