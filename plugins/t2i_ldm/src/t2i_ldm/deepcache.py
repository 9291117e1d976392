"""DeepCache: reuse the UNet's deep features across sampling steps (opt-in).

Ma, Fang & Wang 2023, "DeepCache: Accelerating Diffusion Models for Free" (arXiv 2312.00858,
CVPR 2024): the high-level features of a U-Net change little between adjacent denoising
steps, so they are computed on a *full* step, cached, and reused on the steps between, where
only the shallow blocks at the top of the U run. Uniform schedule: step ``i`` of a sampling
run is full when ``i % interval == 0`` (the first step always is); ``interval`` 1 runs every
step in full (the plain UNet's output, exactly).

``branch`` is the skip branch where the U is cut, in :class:`t2i_ldm.unet.UNetModel`'s
layout (``input_blocks[i]``'s skip feeds ``output_blocks[n - 1 - i]``): a cached step runs
``input_blocks[0..branch]`` and ``output_blocks[n - 1 - branch ..]``; the cached feature is
the input of ``output_blocks[n - 1 - branch]`` (the main-branch feature coming up from
below), as the paper's ``prv_feature``. ``branch=0`` runs only the stem convolution and the
last output block (the paper's LDM code, ``replicate_layer=0``); the default ``branch=1``
also runs the first ResBlock/transformer pair on each side, the blocks DeepCache's SD helper
runs with its default ``cache_branch_id=0``.

A *step* is a call at a new, lower timestep; a call at a higher timestep than the last one
starts a new sampling run (a new image, seed or request) and drops the cache, so no image
reuses another's features; calls at the same timestep (cond and uncond in two calls, a
second-order sampler's correction) are the same step, each with its own cache slot. A
cached feature is only used for a call of the same batch size, device and dtype.
:meth:`DeepCache.reset` drops the cache explicitly; the core's diffusion sampler calls it
(``LdmDenoiser.reset_step_cache``) before every run, so a run that starts below where the
last one stopped (an img2img run after a cancelled one) starts fresh too.
"""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_BRANCH = 1
"""The skip branch cut by default (module docstring)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_deepcache(interval: Any, branch: Any = DEFAULT_BRANCH, blocks: int | None = None):
    """Raise ``ValueError`` naming the bad value and the fix.

    Args:
        interval: full step every ``interval`` steps, an integer >= 1.
        branch: the skip branch, an integer >= 0 (< ``blocks`` when given).
        blocks: the UNet's number of input blocks, when known.
    """
    if not _is_int(interval) or interval < 1:
        raise ValueError(
            f"deepcache={interval!r} is invalid: use an integer >= 1 (a full UNet step every "
            "N steps, e.g. deepcache=3; 1 = every step), or leave it out to switch DeepCache off"
        )
    if not _is_int(branch) or branch < 0 or (blocks is not None and branch >= blocks):
        top = f"[0, {blocks - 1}]" if blocks is not None else ">= 0"
        raise ValueError(
            f"deepcache_branch={branch!r} is invalid: use an integer in {top} (the skip branch "
            f"whose blocks still run on cached steps; default {DEFAULT_BRANCH})"
        )


def input_block_count(config: Any) -> int:
    """``len(UNetModel(config).input_blocks)``: the stem, the res blocks, the downsamplers."""
    return 1 + config.num_levels * config.num_res_blocks + config.num_levels - 1


def _is_fake(x: torch.Tensor) -> bool:
    """A fake tensor (the memory dry run of :mod:`t2i.memory`) must not touch the state."""
    from torch._guards import detect_fake_mode

    return detect_fake_mode([x]) is not None


class DeepCache:
    """DeepCache's state for one denoiser: interval, branch, step counter, cached features.

    Call it in place of the UNet: ``cache(unet, x, t, context, y) -> prediction``.

    Attributes:
        interval, branch: the schedule (module docstring).
        step: the current step of the sampling run (-1 before the first call).
        full_calls, cached_calls: UNet calls of each kind since construction (for benchmarks).
    """

    def __init__(self, interval: int, branch: int = DEFAULT_BRANCH) -> None:
        check_deepcache(interval, branch)
        self.interval, self.branch = interval, branch
        self.full_calls = self.cached_calls = 0
        self.reset()

    def __repr__(self) -> str:
        return f"DeepCache(interval={self.interval}, branch={self.branch})"

    def reset(self) -> None:
        """Forget the cached features and restart the step counter (a new sampling run)."""
        self.step, self._slot = -1, 0
        self._last_t: float | None = None
        self._features: dict[int, torch.Tensor] = {}

    def _advance(self, t: float) -> bool:
        """Count the call at timestep ``t``; whether it is a full step."""
        if self._last_t is None or t > self._last_t:  # a new sampling run
            self.reset()
            self.step = 0
        elif t < self._last_t:
            self.step, self._slot = self.step + 1, 0
        else:  # the same timestep again: the same step, the next slot
            self._slot += 1
        self._last_t = t
        return self.step % self.interval == 0

    def _cached(self, x: torch.Tensor) -> torch.Tensor | None:
        deep = self._features.get(self._slot)
        if deep is None or deep.shape[0] != x.shape[0] or deep.device != x.device:
            return None
        return deep

    def __call__(
        self,
        unet: torch.nn.Module,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The UNet's prediction at ``(x, t)``: in full, or by its shallow blocks on the cache."""
        if _is_fake(x):
            return unet(x, t, context, y)
        stamp = float(t.reshape(-1)[0]) if torch.is_tensor(t) else float(t)
        full = self._advance(stamp)
        deep = None if full else self._cached(x)
        out, feature = unet(x, t, context, y, branch=self.branch, deep=deep)
        if deep is None:
            self._features[self._slot] = feature
            self.full_calls += 1
        else:
            self.cached_calls += 1
        return out


def deepcache_for(
    unet: torch.nn.Module, interval: int | None, branch: int = DEFAULT_BRANCH
) -> DeepCache | None:
    """The :class:`DeepCache` of the factories' ``deepcache`` / ``deepcache_branch`` options
    for ``unet`` (None: off), its branch checked against the UNet's depth."""
    if interval is None:
        return None
    check_deepcache(interval, branch, len(unet.input_blocks))
    return DeepCache(interval, branch)
