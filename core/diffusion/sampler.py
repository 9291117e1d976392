"""``DiffusionSampler``: what the ``SampleDiffusion`` node runs, ``sample(job) -> Latent``.

One :class:`~t2i.contracts.DiffusionJob` runs: validate it (before any model call) ->
seeded noise per row -> ``x = init + noise * sigmas[0]`` (or ``noise * sigmas[0]``) -> the
``sample_<name>`` function over the job's sigmas -> ``Latent(x, seeds)``. The job arrives
complete: the guided model, the conditioning and the sigmas (already cut for img2img)
were made by the ``Guide`` and ``Sigmas`` nodes, so a sampler never looks anything up.

img2img follows diffusers' convention (``sigmas[steps - int(steps * strength):]``, cut by
:func:`img2img_sigmas`): ``int(steps * strength)`` steps run, starting from ``init + noise *
sigma_start``. A1111 runs one step more (``sigmas[steps - t_enc - 1:]``).

Inpainting: an init with a ``mask`` (``Latent.mask``, 1 = resample) gets A1111's blend for
k-diffusion samplers (``CFGDenoiser``, ``mask_before_denoising=False``): after every model
call the prediction is ``denoised * mask + init * (1 - mask)``, and so is the final sample.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import structlog
import torch

from t2i.contracts import DIFFUSION, DiffusionJob
from t2i.diffusion.sampling.common import SamplerStep
from t2i.noise import BatchNoise
from t2i.payloads import Latent

log = structlog.get_logger("t2i.diffusion")

SampleFn = Callable[..., torch.Tensor]


def validate_job(job: DiffusionJob) -> None:
    """Raise ``ValueError`` naming the field for bad jobs (before any model work)."""
    if job.eta is not None and job.eta < 0:
        raise ValueError(f"eta must be >= 0, got {job.eta}")
    if len(job.seeds) != job.shape[0]:
        raise ValueError(f"need one seed per batch row: shape {job.shape}, seeds {job.seeds}")
    if job.sigmas.ndim != 1 or job.sigmas.numel() < 1:
        raise ValueError(f"sigmas must be a non-empty 1-D schedule, got {tuple(job.sigmas.shape)}")
    if job.init is not None and tuple(job.init.samples.shape) != tuple(job.shape):
        raise ValueError(
            f"init latent has shape {tuple(job.init.samples.shape)} but the job's shape is "
            f"{tuple(job.shape)}; resize the init image to the requested width/height"
        )


def img2img_sigmas(sigmas: torch.Tensor, steps: int, strength: float) -> torch.Tensor:
    """The tail of a schedule that img2img runs: ``sigmas[steps - int(steps * strength):]``."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    return sigmas[steps - int(steps * strength) :]


class DiffusionSampler:
    """A registered diffusion sampler: a ``sample_<name>`` function plus its defaults.

    Args:
        fn: ``fn(denoiser, x, sigmas, *, cond, callback, noise_sampler, **opts) -> x``.
        name: the registry name (for logs).
        default_schedule: the schedule a request gets when it names none (resolved when
            the request is made, never here).
        options: fixed keyword options passed to ``fn`` (e.g. ``solver_type``).
        eta_option: name of ``fn``'s stochasticity option that ``job.eta`` sets, or None.
    """

    model_contract = DIFFUSION

    def __init__(
        self,
        fn: SampleFn,
        *,
        name: str,
        default_schedule: str,
        options: dict[str, Any] | None = None,
        eta_option: str | None = "auto",
    ) -> None:
        self.fn = fn
        self.name = name
        self.default_schedule = default_schedule
        self.options = dict(options or {})
        if eta_option == "auto":
            eta_option = "eta" if "eta" in inspect.signature(fn).parameters else None
        self.eta_option = eta_option

    def __repr__(self) -> str:
        return f"DiffusionSampler({self.name!r}, default_schedule={self.default_schedule!r})"

    def sample(self, job: DiffusionJob) -> Latent:
        """Run one batch; see the module docstring for the order of work."""
        validate_job(job)
        sigmas = job.sigmas
        variation = job.variation.noise_options() if job.variation is not None else {}
        noise = BatchNoise(
            job.shape,
            job.seeds,
            device=job.device,
            dtype=job.dtype,
            noise_device=job.noise_device,
            **variation,
        )
        first = noise.next()
        if job.init is not None:
            init = job.init.samples.to(job.device, job.dtype)
            if len(sigmas) < 2:  # strength so low that no step runs
                return Latent(init, seeds=job.seeds)
            x = init + first * float(sigmas[0]) if job.add_noise else init
        else:
            x = first * float(sigmas[0])
            if len(sigmas) < 2:  # a first stage that hands over before its first step
                return Latent(x, seeds=job.seeds)
        model, keep = job.model, None
        if job.init is not None and job.init.mask is not None:
            mask = job.init.mask.to(job.device, job.dtype)
            keep = init * (1 - mask)
            model = _blended(job.model, mask, keep)
        opts = dict(self.options)
        if self.eta_option is not None and job.eta is not None:
            opts[self.eta_option] = job.eta
        log.debug("sample", sampler=self.name, steps=len(sigmas) - 1, batch=job.shape[0])
        reset_step_cache(job.model)
        x = self.fn(
            model,
            x,
            sigmas,
            cond=job.cond,
            callback=_step_callback(job.callback, job.preview),
            noise_sampler=noise.sampler,
            **opts,
        )
        if keep is not None:
            x = x * mask + keep
        return Latent(x, seeds=job.seeds)


def reset_step_cache(model: Any) -> None:
    """Start a new sampling run on ``model``: a denoiser with state across steps (its
    ``reset_step_cache()``, e.g. DeepCache's features) drops it; others are left alone.
    Guidance wrappers forward the attribute to the denoiser they wrap."""
    reset = getattr(model, "reset_step_cache", None)
    if callable(reset):
        reset()


def _blended(model: Any, mask: torch.Tensor, keep: torch.Tensor) -> Callable[..., torch.Tensor]:
    """``model`` whose prediction keeps the init sample outside ``mask``: ``D(x) * mask +
    keep`` with ``keep = init * (1 - mask)`` (A1111's ``apply_blend``)."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor, cond: Any = None, **kw: Any) -> torch.Tensor:
        return model(x, sigma, cond, **kw) * mask + keep

    return denoise


def _step_callback(
    callback: Callable[[int, int], None] | None,
    preview: Callable[[int, int, Any], None] | None = None,
):
    """Adapt ``callback(step, total)`` and ``preview(step, total, denoised)`` to the sampler
    functions' ``SamplerStep`` callback (the preview first, then the callback, which may
    raise to cancel)."""
    if callback is None and preview is None:
        return None

    def on_step(step: SamplerStep) -> None:
        if preview is not None:
            preview(step.i + 1, step.total, step.denoised)
        if callback is not None:
            callback(step.i + 1, step.total)

    return on_step
