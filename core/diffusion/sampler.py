"""``DiffusionSampler``: the glue the engine calls, ``sample(job: SampleJob) -> Latent``.

One job runs: validate the request (before any model call) -> schedule (the job's
or the sampler's default) -> sigmas for ``job.model`` and ``job.steps`` -> for
img2img truncate them -> seeded noise per row -> wrap the model with guidance ->
run the sampler function -> ``Latent(x, seeds)``.

img2img follows diffusers' convention (the issue's ``sigmas[steps - int(steps *
strength):]``): ``int(steps * strength)`` steps run, starting from ``init + noise *
sigma_start``. A1111 runs one step more (``sigmas[steps - t_enc - 1:]``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import structlog
import torch

from t2i.contracts import SampleJob
from t2i.payloads import Latent
from t2i.diffusion.sampling.common import SamplerStep
from t2i.noise import BatchNoise

log = structlog.get_logger("t2i.diffusion.sampling")

SampleFn = Callable[..., torch.Tensor]


def _default_schedule_lookup(name: str) -> Any:
    from t2i.plugins import get_plugin_manager

    return get_plugin_manager().registry.create("schedule", name)


def _default_guidance() -> Any:
    from t2i.diffusion.guidance import ClassifierFreeGuidance

    return ClassifierFreeGuidance()


def validate_job(job: SampleJob) -> None:
    """Raise ``ValueError`` naming the field for bad requests (before any model work)."""
    if not isinstance(job.steps, int) or job.steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {job.steps!r}")
    if not 0 <= job.strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {job.strength}")
    if not job.cfg_scale >= 0:
        raise ValueError(f"cfg_scale must be >= 0 (1 = no guidance), got {job.cfg_scale}")
    if job.eta is not None and job.eta < 0:
        raise ValueError(f"eta must be >= 0, got {job.eta}")
    if len(job.seeds) != job.shape[0]:
        raise ValueError(f"need one seed per batch row: shape {job.shape}, seeds {job.seeds}")
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
        default_schedule: schedule name used when ``job.schedule`` is None.
        options: fixed keyword options passed to ``fn`` (e.g. ``solver_type``).
        eta_option: name of ``fn``'s stochasticity option that ``job.eta`` sets, or None.
        schedule_lookup: ``name -> schedule object``; defaults to the plugin registry.
    """

    def __init__(
        self,
        fn: SampleFn,
        *,
        name: str,
        default_schedule: str,
        options: dict[str, Any] | None = None,
        eta_option: str | None = "auto",
        schedule_lookup: Callable[[str], Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.default_schedule = default_schedule
        self.options = dict(options or {})
        if eta_option == "auto":
            eta_option = "eta" if "eta" in inspect.signature(fn).parameters else None
        self.eta_option = eta_option
        self.schedule_lookup = schedule_lookup or _default_schedule_lookup

    def __repr__(self) -> str:
        return f"DiffusionSampler({self.name!r}, default_schedule={self.default_schedule!r})"

    def sigmas(
        self, model: Any, steps: int, schedule: str | None = None, registry: Any = None
    ) -> torch.Tensor:
        """The full descending schedule (CPU float64, ending with 0) for ``model``.

        ``registry``: where to look the schedule up (the job's); default ``schedule_lookup``.
        """
        name = schedule or self.default_schedule
        sched = (
            registry.create("schedule", name)
            if registry is not None
            else (self.schedule_lookup(name))
        )
        return sched.get_sigmas(model, steps)

    def sample(self, job: SampleJob) -> Latent:
        """Run one batch; see the module docstring for the order of work."""
        validate_job(job)
        guidance = job.guidance if job.guidance is not None else _default_guidance()
        uncond = job.negative.to(job.device, job.dtype) if job.negative is not None else None
        model = guidance.wrap(job.model, uncond=uncond, scale=job.cfg_scale)  # checks scale
        cond = job.positive.to(job.device, job.dtype) if job.positive is not None else None
        sigmas = self.sigmas(job.model, job.steps, job.schedule, job.registry)
        if job.init is not None:
            sigmas = img2img_sigmas(sigmas, job.steps, job.strength)
        noise = BatchNoise(
            job.shape, job.seeds, device=job.device, dtype=job.dtype, noise_device=job.noise_device
        )
        first = noise.next()
        if job.init is not None:
            init = job.init.samples.to(job.device, job.dtype)
            if len(sigmas) < 2:  # strength so low that no step runs
                return Latent(init, seeds=job.seeds)
            x = init + first * float(sigmas[0])
        else:
            x = first * float(sigmas[0])
        total = len(sigmas) - 1
        callback = None
        if job.callback is not None:
            user_cb = job.callback

            def callback(step: SamplerStep) -> None:
                user_cb(step.i + 1, step.total)

        opts = dict(self.options)
        if self.eta_option is not None and job.eta is not None:
            opts[self.eta_option] = job.eta
        log.debug(
            "sample",
            sampler=self.name,
            steps=total,
            schedule=job.schedule or self.default_schedule,
            batch=job.shape[0],
        )
        x = self.fn(
            model, x, sigmas, cond=cond, callback=callback, noise_sampler=noise.sampler, **opts
        )
        return Latent(x, seeds=job.seeds)
