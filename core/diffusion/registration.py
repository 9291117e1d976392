"""The diffusion toolbox's built-ins (samplers, schedules, guidance, nodes), registered by
plain functions, by import path: registering them imports neither torch nor the toolbox.

``t2i.builtins`` calls these from its ``t2i_register_*`` hookimpls. Sampler names
follow k-diffusion; aliases are the AUTOMATIC1111 display names and its ``k_*`` ids.
Default schedules follow A1111 (karras for DPM++ 2M / DPM++ SDE / DPM2, exponential
for DPM++ 2M SDE, the k-diffusion model spacing ``normal`` ("Uniform") for the other
k-samplers) and diffusers for SD's timestep samplers (``leading`` for DDIM/PLMS/DDPM/UniPC).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import attrs

from t2i.kinds import DIFFUSION
from t2i.registry.lazy import lazy

_SAMPLING = "t2i.diffusion.sampling"


@attrs.frozen
class SamplerSpec:
    """One built-in sampler: registry name, function path, web-UI aliases, default schedule."""

    name: str
    fn_path: str
    aliases: tuple[str, ...]
    default_schedule: str
    description: str
    options: dict[str, Any] = attrs.Factory(dict)

    @property
    def fn(self) -> Callable[..., Any]:
        """The ``sample_<name>`` function (imports it)."""
        module, _, attribute = self.fn_path.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _spec(name, module, aliases, schedule, description) -> SamplerSpec:
    return SamplerSpec(name, f"{_SAMPLING}.{module}:sample_{name}", aliases, schedule, description)


BUILTIN_SAMPLERS: tuple[SamplerSpec, ...] = (
    _spec("ddpm", "timestep", ("DDPM",), "leading", "DDPM ancestral sampling (Ho et al. 2020)"),
    _spec("ddim", "timestep", ("DDIM",), "leading", "DDIM with eta (Song et al. 2021)"),
    _spec(
        "plms", "timestep", ("PLMS", "pndm"), "leading", "PLMS / PNDM without RK warm-up (Liu 2022)"
    ),
    _spec("euler", "euler", ("Euler", "k_euler"), "normal", "Euler, Karras et al. 2022 Alg. 2"),
    _spec(
        "euler_ancestral",
        "euler",
        ("Euler a", "k_euler_a", "k_euler_ancestral"),
        "normal",
        "ancestral Euler",
    ),
    _spec("heun", "euler", ("Heun", "k_heun"), "normal", "Heun, Karras et al. 2022 Alg. 2"),
    _spec("dpm_2", "euler", ("DPM2", "k_dpm_2"), "karras", "DPM-Solver-2 in Karras form"),
    _spec("dpm_2_ancestral", "euler", ("DPM2 a", "k_dpm_2_a"), "karras", "ancestral DPM2"),
    _spec("lms", "lms", ("LMS", "k_lms"), "normal", "linear multistep, order 4"),
    _spec(
        "dpmpp_2m",
        "dpm_solver",
        ("DPM++ 2M", "k_dpmpp_2m"),
        "karras",
        "DPM-Solver++(2M) (Lu et al. 2022)",
    ),
    _spec(
        "dpmpp_2m_sde",
        "dpm_solver",
        ("DPM++ 2M SDE", "k_dpmpp_2m_sde"),
        "exponential",
        "SDE-DPM-Solver++(2M), midpoint",
    ),
    _spec(
        "dpmpp_sde",
        "dpm_solver",
        ("DPM++ SDE", "k_dpmpp_sde"),
        "karras",
        "stochastic DPM-Solver++(2S)",
    ),
    _spec(
        "unipc", "unipc", ("UniPC", "uni_pc"), "leading", "UniPC bh2, order 2 (Zhao et al. 2023)"
    ),
    _spec(
        "lcm",
        "lcm",
        ("LCM", "k_lcm"),
        "sgm_uniform",
        "Latent Consistency Model sampling (Luo et al. 2023): LCM models and LCM-LoRAs, 2-8 steps",
    ),
)


def sampler_factory(spec: SamplerSpec) -> Callable[..., Any]:
    """``factory(**options)``: options override the spec's (e.g. ``default_schedule``).

    The factory carries ``default_schedule`` and ``model_contract``, so a request's
    schedule and a recipe's fit are settled from the registry without building a sampler.
    """

    def factory(default_schedule: str | None = None, **options: Any):
        from t2i.diffusion.sampler import DiffusionSampler

        return DiffusionSampler(
            spec.fn,
            name=spec.name,
            default_schedule=default_schedule or spec.default_schedule,
            options={**spec.options, **options},
        )

    factory.__doc__ = spec.description
    factory.default_schedule = spec.default_schedule  # type: ignore[attr-defined]
    factory.model_contract = DIFFUSION  # type: ignore[attr-defined]
    return factory


def register_samplers(register: Callable[..., Any]) -> None:
    """Register every built-in diffusion sampler with its A1111 aliases."""
    for spec in BUILTIN_SAMPLERS:
        register(
            spec.name, sampler_factory(spec), aliases=spec.aliases, description=spec.description
        )


_NAMED = "t2i.diffusion.schedules.named"


def _table(spacing: str) -> Callable[..., Any]:
    def factory(**options: Any):
        from t2i.diffusion.schedules.named import TableSchedule

        return TableSchedule(spacing, **options)

    return factory


SCHEDULE_ENTRIES: tuple[tuple[str, Callable[..., Any], tuple[str, ...], str], ...] = (
    ("karras", lazy(f"{_NAMED}:KarrasSchedule"), ("Karras",), "Karras et al. 2022, rho 7"),
    (
        "exponential",
        lazy(f"{_NAMED}:ExponentialSchedule"),
        ("Exponential",),
        "uniform in log sigma",
    ),
    (
        "polyexponential",
        lazy(f"{_NAMED}:PolyexponentialSchedule"),
        ("Polyexponential",),
        "k-diffusion, rho 1",
    ),
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


_GUIDANCE = "t2i.diffusion.guidance.guidance"
GUIDANCE_ENTRIES: tuple[tuple[str, str, tuple[str, ...], str | None, str], ...] = (
    ("cfg", "ClassifierFreeGuidance", ("CFG", "classifier_free"), DIFFUSION,
     "classifier-free guidance with negative conditioning"),
    ("dynamic", "DynamicThresholding", ("dynamic_thresholding",), DIFFUSION,
     "CFG + Imagen dynamic thresholding"),
    ("static", "StaticThresholding", ("static_thresholding",), DIFFUSION,
     "CFG + clamp x0 to [-1, 1]"),
    ("rescale", "CFGRescale", ("cfg_rescale",), DIFFUSION,
     "CFG-rescale (Lin et al. 2023), phi 0.7"),
    ("none", "NoGuidance", ("unguided",), None, "no guidance, one call (any model)"),
)  # fmt: skip


def register_guidance(register: Callable[..., Any]) -> None:
    """Register ``cfg``, ``dynamic``, ``static``, ``rescale`` and ``none``."""
    for name, cls, aliases, contract, description in GUIDANCE_ENTRIES:
        register(
            name,
            lazy(f"{_GUIDANCE}:{cls}", doc=description, model_contract=contract),
            aliases=aliases,
            description=description,
        )


NODE_ENTRIES: tuple[tuple[str, str, str], ...] = (
    ("Sigmas", "SigmasNode", "a schedule's sigmas for a model and a step count"),
    ("SampleDiffusion", "SampleDiffusion", "run a diffusion sampler over the sigmas"),
    ("LowResCondition", "LowResCondition", "a cascade stage's output -> the next's condition"),
    ("SplitSigmas", "SplitSigmas", "sigmas split where a second model takes over (refiner)"),
    ("MaskLatent", "MaskLatent", "an img2img start sample + inpainting mask (A1111's)"),
)


def register_nodes(register: Callable[..., Any]) -> None:
    """Register ``Sigmas``, ``SampleDiffusion``, ``LowResCondition`` and ``MaskLatent``."""
    for name, cls, description in NODE_ENTRIES:
        register(name, lazy(f"t2i.diffusion.nodes:{cls}"), description=description)
