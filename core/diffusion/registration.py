"""The diffusion toolbox's built-ins (samplers, schedules, guidance, nodes), registered by
plain functions.

``t2i.builtins`` calls these from its ``t2i_register_*`` hookimpls. Sampler names
follow k-diffusion; aliases are the AUTOMATIC1111 display names and its ``k_*`` ids.
Default schedules follow A1111 (karras for DPM++ 2M / DPM++ SDE / DPM2, exponential
for DPM++ 2M SDE, the k-diffusion model spacing ``normal`` ("Uniform") for the other
k-samplers) and diffusers for SD's timestep samplers (``leading`` for DDIM/PLMS/DDPM/UniPC).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from t2i.diffusion.guidance import (
    CFGRescale,
    ClassifierFreeGuidance,
    DynamicThresholding,
    NoGuidance,
    StaticThresholding,
)
from t2i.diffusion.sampler import DiffusionSampler, SampleFn
from t2i.diffusion.sampling.dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_sde
from t2i.diffusion.sampling.euler import (
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
)
from t2i.diffusion.sampling.lms import sample_lms
from t2i.diffusion.sampling.timestep import sample_ddim, sample_ddpm, sample_plms
from t2i.diffusion.schedules.named import (
    ExponentialSchedule,
    KarrasSchedule,
    PolyexponentialSchedule,
    TableSchedule,
)


@attrs.frozen
class SamplerSpec:
    """One built-in sampler: registry name, function, web-UI aliases, default schedule."""

    name: str
    fn: SampleFn
    aliases: tuple[str, ...]
    default_schedule: str
    description: str
    options: dict[str, Any] = attrs.Factory(dict)


def _builtin_samplers() -> list[SamplerSpec]:
    specs = [
        SamplerSpec(
            "ddpm", sample_ddpm, ("DDPM",), "leading", "DDPM ancestral sampling (Ho et al. 2020)"
        ),
        SamplerSpec("ddim", sample_ddim, ("DDIM",), "leading", "DDIM with eta (Song et al. 2021)"),
        SamplerSpec(
            "plms",
            sample_plms,
            ("PLMS", "pndm"),
            "leading",
            "PLMS / PNDM without RK warm-up (Liu et al. 2022)",
        ),
        SamplerSpec(
            "euler",
            sample_euler,
            ("Euler", "k_euler"),
            "normal",
            "Euler, Karras et al. 2022 Alg. 2",
        ),
        SamplerSpec(
            "euler_ancestral",
            sample_euler_ancestral,
            ("Euler a", "k_euler_a", "k_euler_ancestral"),
            "normal",
            "ancestral Euler",
        ),
        SamplerSpec(
            "heun", sample_heun, ("Heun", "k_heun"), "normal", "Heun, Karras et al. 2022 Alg. 2"
        ),
        SamplerSpec(
            "dpm_2", sample_dpm_2, ("DPM2", "k_dpm_2"), "karras", "DPM-Solver-2 in Karras form"
        ),
        SamplerSpec(
            "dpm_2_ancestral",
            sample_dpm_2_ancestral,
            ("DPM2 a", "k_dpm_2_a"),
            "karras",
            "ancestral DPM2",
        ),
        SamplerSpec("lms", sample_lms, ("LMS", "k_lms"), "normal", "linear multistep, order 4"),
        SamplerSpec(
            "dpmpp_2m",
            sample_dpmpp_2m,
            ("DPM++ 2M", "k_dpmpp_2m"),
            "karras",
            "DPM-Solver++(2M) (Lu et al. 2022)",
        ),
        SamplerSpec(
            "dpmpp_2m_sde",
            sample_dpmpp_2m_sde,
            ("DPM++ 2M SDE", "k_dpmpp_2m_sde"),
            "exponential",
            "SDE-DPM-Solver++(2M), midpoint",
        ),
        SamplerSpec(
            "dpmpp_sde",
            sample_dpmpp_sde,
            ("DPM++ SDE", "k_dpmpp_sde"),
            "karras",
            "stochastic DPM-Solver++(2S)",
        ),
    ]
    try:
        from t2i.diffusion.sampling.unipc import sample_unipc
    except ImportError:  # pragma: no cover
        return specs
    specs.append(
        SamplerSpec(
            "unipc",
            sample_unipc,
            ("UniPC", "uni_pc"),
            "leading",
            "UniPC bh2, order 2 (Zhao et al. 2023)",
        )
    )
    return specs


BUILTIN_SAMPLERS: tuple[SamplerSpec, ...] = tuple(_builtin_samplers())


def sampler_factory(spec: SamplerSpec) -> Callable[..., DiffusionSampler]:
    """``factory(**options)``: options override the spec's (e.g. ``default_schedule``).

    The factory carries ``default_schedule`` and ``model_contract``, so a request's
    schedule and a recipe's fit are settled from the registry without building a sampler.
    """

    def factory(default_schedule: str | None = None, **options: Any) -> DiffusionSampler:
        return DiffusionSampler(
            spec.fn,
            name=spec.name,
            default_schedule=default_schedule or spec.default_schedule,
            options={**spec.options, **options},
        )

    factory.__doc__ = spec.description
    factory.default_schedule = spec.default_schedule  # type: ignore[attr-defined]
    factory.model_contract = DiffusionSampler.model_contract  # type: ignore[attr-defined]
    return factory


def register_samplers(register: Callable[..., Any]) -> None:
    """Register every built-in diffusion sampler with its A1111 aliases."""
    for spec in BUILTIN_SAMPLERS:
        register(
            spec.name, sampler_factory(spec), aliases=spec.aliases, description=spec.description
        )


def _table(spacing: str) -> Callable[..., TableSchedule]:
    def factory(**options: Any) -> TableSchedule:
        return TableSchedule(spacing, **options)

    return factory


SCHEDULE_ENTRIES: tuple[tuple[str, Callable[..., Any], tuple[str, ...], str], ...] = (
    ("karras", KarrasSchedule, ("Karras",), "Karras et al. 2022, rho 7"),
    ("exponential", ExponentialSchedule, ("Exponential",), "uniform in log sigma"),
    ("polyexponential", PolyexponentialSchedule, ("Polyexponential",), "k-diffusion, rho 1"),
    ("leading", _table("leading"), ("Leading",), "diffusers leading spacing, steps_offset 1"),
    ("trailing", _table("trailing"), ("Trailing",), "diffusers trailing spacing"),
    ("linspace", _table("linspace"), ("Linspace",), "diffusers linspace spacing"),
    (
        "normal",
        _table("normal"),
        ("Uniform", "Normal"),
        "even fractional timesteps, log-sigma interpolation (k-diffusion model spacing)",
    ),
    ("sgm_uniform", _table("sgm_uniform"), ("SGM Uniform", "SGMUniform"), "SGM uniform"),
    ("simple", _table("simple"), ("Simple",), "ComfyUI simple"),
    ("ddim_uniform", _table("ddim_uniform"), ("DDIM", "DDIM Uniform"), "ComfyUI ddim_uniform"),
)
"""The first alias is the web UI's label (A1111 v1.10 "Schedule type": Uniform is its model
spacing, DDIM its ddim_uniform); ``leading``/``trailing``/``linspace`` are diffusers'
timestep spacings, which A1111 has no label for. "Automatic" is not a schedule: it means
the sampler's own default and is resolved when a request is made."""


def register_schedules(register: Callable[..., Any]) -> None:
    """Register every built-in sigma schedule (factories return ``get_sigmas`` objects)."""
    for name, factory, aliases, description in SCHEDULE_ENTRIES:
        register(name, factory, aliases=aliases, description=description)


def register_guidance(register: Callable[..., Any]) -> None:
    """Register ``cfg``, ``dynamic``, ``static``, ``rescale`` and ``none``."""
    register(
        "cfg",
        ClassifierFreeGuidance,
        aliases=("CFG", "classifier_free"),
        description="classifier-free guidance with negative conditioning",
    )
    register(
        "dynamic",
        DynamicThresholding,
        aliases=("dynamic_thresholding",),
        description="CFG + Imagen dynamic thresholding",
    )
    register(
        "static",
        StaticThresholding,
        aliases=("static_thresholding",),
        description="CFG + clamp x0 to [-1, 1]",
    )
    register(
        "rescale",
        CFGRescale,
        aliases=("cfg_rescale",),
        description="CFG-rescale (Lin et al. 2023), phi 0.7",
    )
    register("none", NoGuidance, aliases=("unguided",), description="no guidance, one call")


def register_nodes(register: Callable[..., Any]) -> None:
    """Register ``Sigmas``, ``SampleDiffusion`` and ``LowResCondition``."""
    from t2i.diffusion.nodes import register_diffusion_nodes

    register_diffusion_nodes(register)
