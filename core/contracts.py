"""Contracts of the component kinds and generation shapes, so that parts from different
plugins fit.

These are structural protocols: a plugin's class satisfies one by having the methods,
not by inheriting. One protocol per generation shape:

- :class:`DiffusionDenoiser` ``D(x, sigma, cond) -> x0`` (Karras et al. 2022), sampled by a
  :class:`DiffusionSampler` over a :class:`DiffusionJob`;
- :class:`TokenPredictor` ``(tokens, cond, cache) -> (logits, cache)`` with an explicit
  :class:`KVCache` (DALL-E, Ramesh et al. 2021), sampled by a :class:`TokenSampler` over a
  :class:`TokenJob`;
- :class:`Generator` ``(z, cond) -> image`` in one pass (a GAN, Goodfellow et al. 2014),
  run by a :class:`SinglePassSampler` over a :class:`GeneratorJob`.

Image conditioning for cascades (Imagen, Saharia et al. 2022, section 2.5): a
super-resolution denoiser receives the low-resolution image and its noise-augmentation
level as ``cond.image`` (:class:`~t2i.payloads.ImageCondition`).

Each guidance and each sampler declares the model contract it works on
(``model_contract``, one of :data:`MODEL_CONTRACTS`, or None for any), so a recipe whose
guidance does not fit its model is refused when it is built. A component that holds
``nn.Module`` s describes them for exporters with :class:`ExportSpec`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import torch

from t2i.kinds import DIFFUSION, GENERATOR, KINDS, MODEL_CONTRACTS, TOKENS  # noqa: F401
from t2i.payloads import Conditioning, Image, Latent, SeedVariation, Tokens


def model_contract_of(obj: Any) -> str | None:
    """The ``model_contract`` a component or its factory declares (None: fits any model)."""
    return getattr(obj, "model_contract", None)


def require_contract(component: Any, what: str, name: str, contract: str) -> None:
    """Raise ``TypeError`` if ``component`` (a sampler or guidance named ``name``) declares a
    model contract other than ``contract``."""
    declared = model_contract_of(component)
    if declared is not None and declared != contract:
        raise TypeError(
            f"{what} {name!r} works on {MODEL_CONTRACTS.get(declared, declared)}, but this node "
            f"samples {MODEL_CONTRACTS.get(contract, contract)}: choose a {what} made for it"
        )


# -- text ------------------------------------------------------------------------------------
@runtime_checkable
class Tokenizer(Protocol):
    """Text -> token ids (+ a weight per token)."""

    def __call__(self, texts: Sequence[str]) -> Tokens: ...


@runtime_checkable
class TextEncoder(Protocol):
    """Token ids -> conditioning tensors."""

    def __call__(self, tokens: Tokens) -> Conditioning: ...


# -- diffusion -------------------------------------------------------------------------------
@runtime_checkable
class DiffusionDenoiser(Protocol):
    """Diffusion denoiser in the Karras et al. (2022) form: ``D(x, sigma, cond) -> x0``.

    ``x`` is ``(B, C, H, W)``, ``sigma`` a ``(B,)`` tensor, the result has ``x``'s shape.
    ``sigma_min``/``sigma_max`` bound the trained range; discrete-time models also expose
    ``sigmas``, their ascending trained sigma table, which schedules such as ``leading``
    or ``simple`` index into. A super-resolution denoiser reads ``cond.image``.

    A denoiser that keeps state across the steps of one run (DeepCache's cached features)
    defines ``reset_step_cache()``: the diffusion sampler calls it (through guidance
    wrappers) before the first step of every run, so no run sees another's state.
    """

    sigma_min: float
    sigma_max: float

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning
    ) -> torch.Tensor: ...


KarrasDenoiser = DiffusionDenoiser
"""The name this contract had before core v2."""


@runtime_checkable
class TrainableDenoiser(DiffusionDenoiser, Protocol):
    """A diffusion denoiser that also gives its training loss (k-diffusion puts ``loss()``
    next to ``forward``): ``loss(x0, cond, noise=n, sigma=s)`` noises ``x0`` to
    ``x0 + n * s`` and returns the per-sample loss ``(B,)`` in the model's own
    parameterisation (eps, v or x0)."""

    def loss(
        self, x0: torch.Tensor, cond: Conditioning, *, noise: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor: ...


@attrs.frozen(eq=False)
class DiffusionJob:
    """One batch for a diffusion sampler: everything resolved, nothing looked up.

    Attributes:
        model: the guided denoiser, ``D(x, sigma, cond) -> x0``.
        cond: the conditioning ``model`` is called with (batch B), or None.
        sigmas: the descending schedule to run, ending with 0 (already cut for img2img).
        shape: ``(B, C, H, W)`` of the sample.
        seeds: one seed per batch row; all randomness is drawn from them.
        init: img2img start sample, or None to start from noise; its ``mask`` (inpainting)
            keeps it outside the mask (the sampler blends after every step).
        eta: stochasticity for samplers that have it (DDIM eta, ancestral s_noise), or None.
        device, dtype: where the model runs.
        noise_device: "cpu" (default; the same image on any device) or "device".
        callback: ``callback(step, total)`` after every step; it may raise to cancel.
        preview: ``preview(step, total, denoised)`` after every step with the current
            prediction of the clean sample (``x0``, shape ``shape``), for live previews.
        variation: A1111's variation seeds for the initial noise
            (:class:`t2i.payloads.SeedVariation`), or None.
        add_noise: noise ``init`` to ``sigmas[0]`` (img2img); False: ``init`` already is at
            ``sigmas[0]``, the partial sample of an earlier stage that this job continues
            (SDXL's refiner; ComfyUI's ``KSamplerAdvanced(add_noise="disable")``).
    """

    model: Any
    cond: Conditioning | None
    sigmas: torch.Tensor
    shape: tuple[int, ...]
    seeds: tuple[int, ...]
    init: Latent | None = None
    eta: float | None = None
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    noise_device: str = "cpu"
    callback: Callable[[int, int], None] | None = None
    preview: Callable[[int, int, torch.Tensor], None] | None = None
    variation: SeedVariation | None = None
    add_noise: bool = True


@runtime_checkable
class DiffusionSampler(Protocol):
    """The loop that turns noise into a sample: ``sample(job) -> Latent``."""

    model_contract: str

    def sample(self, job: DiffusionJob) -> Latent: ...


@runtime_checkable
class Schedule(Protocol):
    """A sigma schedule: ``get_sigmas(model, steps)`` -> descending ``(steps + 1,)``, last 0."""

    def get_sigmas(self, model: Any, steps: int) -> torch.Tensor: ...


# -- autoregressive tokens -------------------------------------------------------------------
@attrs.define(eq=False)
class KVCache:
    """Keys and values of the tokens a :class:`TokenPredictor` has seen, per layer.

    ``keys[i]`` / ``values[i]`` are ``(B, heads, T, head_dim)`` (any layout the model
    likes, with the time axis at ``time_dim``). ``length`` is ``T``.
    """

    keys: list[torch.Tensor] = attrs.Factory(list)
    values: list[torch.Tensor] = attrs.Factory(list)
    time_dim: int = 2

    @property
    def length(self) -> int:
        return 0 if not self.keys else int(self.keys[0].shape[self.time_dim])

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Append this step's ``k``/``v`` to layer ``layer``; returns the layer's full k, v."""
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        elif layer < len(self.keys):
            self.keys[layer] = torch.cat([self.keys[layer], k], self.time_dim)
            self.values[layer] = torch.cat([self.values[layer], v], self.time_dim)
        else:
            raise IndexError(f"layer {layer} extended before layer {len(self.keys)}")
        return self.keys[layer], self.values[layer]

    def repeat(self, times: int) -> KVCache:
        """The cache with its batch repeated ``times`` times (``[c; c; ...]``)."""
        rep = lambda ts: [t.repeat(times, *([1] * (t.ndim - 1))) for t in ts]  # noqa: E731
        return KVCache(rep(self.keys), rep(self.values), self.time_dim)


@runtime_checkable
class TokenPredictor(Protocol):
    """Next-token logits: ``(tokens, cond, cache) -> (logits, cache)`` (Ramesh et al. 2021).

    ``tokens`` is ``(B, T)`` int64, the tokens not yet in ``cache`` (the whole prefix on the
    first call, with ``cache=None``); ``logits`` is ``(B, vocab)`` for the next token.
    ``vocab_size`` image tokens; ``bos`` starts the image stream.
    """

    vocab_size: int
    bos: int

    def __call__(
        self, tokens: torch.Tensor, cond: Conditioning | None, cache: KVCache | None
    ) -> tuple[torch.Tensor, KVCache]: ...


@attrs.frozen(eq=False)
class TokenJob:
    """One batch for a token sampler.

    Attributes:
        model: the (guided) token predictor.
        cond: the prompt's conditioning (batch B), or None.
        length: how many image tokens to draw per row.
        seeds: one seed per row.
        device, dtype: where the model runs.
        callback: ``callback(step, total)`` after each token.
        preview: ``preview(step, total, tokens)`` after every ``preview_every`` tokens and
            after the last, with the ``(B, length)`` int64 tokens drawn so far and
            :data:`UNDRAWN` at the positions not drawn yet, for live previews; or None.
        preview_every: tokens between previews (>= 1).
    """

    model: Any
    cond: Conditioning | None
    length: int
    seeds: tuple[int, ...]
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    callback: Callable[[int, int], None] | None = None
    preview: Callable[[int, int, torch.Tensor], None] | None = None
    preview_every: int = attrs.field(default=1, validator=attrs.validators.ge(1))


UNDRAWN = -1
"""The token id of a position not drawn yet, in a :class:`TokenJob` preview (no codebook
has it: a decoder that shows partial grids picks its own neutral stand-in)."""


@runtime_checkable
class PreviewDecoder(Protocol):
    """A decoder that can show a partial sample: ``decode_preview(Latent) -> Image``.

    A token decoder implements it for grids holding :data:`UNDRAWN` positions (the live
    preview of an autoregressive sampling); a decoder without it is given only complete
    samples. Optional: callers use ``decode`` when a decoder lacks it.
    """

    def decode_preview(self, latent: Latent) -> Image: ...


@runtime_checkable
class TokenSampler(Protocol):
    """Draws ``job.length`` tokens per row: ``sample(job) -> (B, length)`` int64 tensor."""

    model_contract: str

    def sample(self, job: TokenJob) -> torch.Tensor: ...


# -- single pass -----------------------------------------------------------------------------
@runtime_checkable
class Generator(Protocol):
    """A single-pass generator ``G(z, cond) -> image``: ``z`` ``(B, z_dim)``, image in [-1, 1]."""

    z_dim: int

    def __call__(self, z: torch.Tensor, cond: Conditioning | None) -> torch.Tensor: ...


@attrs.frozen(eq=False)
class GeneratorJob:
    """One batch for a single-pass sampler: the generator, its conditioning, z's seeds."""

    model: Any
    cond: Conditioning | None
    seeds: tuple[int, ...]
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    callback: Callable[[int, int], None] | None = None


@runtime_checkable
class SinglePassSampler(Protocol):
    """Draws ``z`` from the seeds and calls the generator once: ``sample(job) -> Latent``."""

    model_contract: str

    def sample(self, job: GeneratorJob) -> Latent: ...


# -- guidance and decoding -------------------------------------------------------------------
@runtime_checkable
class Guidance(Protocol):
    """Combines conditional and unconditional predictions by wrapping a model.

    ``wrap`` returns a model of the same contract as the one it wraps; ``model_contract``
    names that contract (None: any).
    """

    model_contract: str | None

    def wrap(self, model: Any, *, uncond: Conditioning | None, scale: float) -> Any: ...


@runtime_checkable
class Decoder(Protocol):
    """Sample space -> pixels. ``factor`` pixels per latent cell, ``channels`` latent channels.

    Decoders with ``encode(image) -> Latent`` support img2img.
    """

    factor: int
    channels: int

    def decode(self, latent: Latent) -> Image: ...


# -- export ----------------------------------------------------------------------------------
@attrs.frozen(eq=False)
class ExportedModule:
    """One ``nn.Module`` of a component, described for an exporter (ONNX, torch.export).

    Attributes:
        name: file stem of the exported model (``unet``, ``vae_decoder``, ``text_encoder``).
        module: the module; ``module(*example_inputs)`` must run.
        example_inputs: a tuple of tensors in ``input_names`` order.
        input_names, output_names: names of the graph's inputs and outputs.
        dynamic_axes: ``{input or output name: {axis: "batch" | "height" ...}}``.
    """

    name: str
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        if len(self.example_inputs) != len(self.input_names):
            raise ValueError(
                f"{self.name}: {len(self.example_inputs)} example inputs but "
                f"{len(self.input_names)} input names"
            )
        names = (*self.input_names, *self.output_names)
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: input and output names must be distinct: {names}")
        unknown = sorted(set(self.dynamic_axes) - set(names))
        if unknown:
            raise ValueError(f"{self.name}: dynamic axes for unknown inputs/outputs {unknown}")
        for name, x in zip(self.input_names, self.example_inputs):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{self.name}: example input {name!r} is {type(x).__name__}")
            bad = sorted(a for a in self.dynamic_axes.get(name, {}) if not 0 <= a < x.ndim)
            if bad:
                raise ValueError(
                    f"{self.name}: input {name!r} has {x.ndim} dims, no axis {bad} to make dynamic"
                )


@attrs.frozen
class Deployment:
    """How a deployment runtime rebuilds a component around its exported modules with none of
    the family's model code (no ``nn.Module`` class, no transformers modeling module).

    ``factory`` (``"package.module:callable"``, in a module that imports no model code) is
    called as ``factory(modules, **options)``: ``modules`` maps each
    :class:`ExportedModule` name to a callable that takes and returns torch tensors as that
    module does (positional inputs in ``input_names`` order; one tensor or a tuple in
    ``output_names`` order), and ``options`` are JSON values (a schedule, a prediction type,
    vocabulary sizes). It returns a component of the same kind and contract whose outputs
    match the torch component's within the runtime's precision.
    """

    factory: str = attrs.field()
    options: Mapping[str, Any] = attrs.Factory(dict)

    @factory.validator
    def _check_factory(self, _attribute, value: str) -> None:
        if not isinstance(value, str) or value.count(":") != 1:
            raise ValueError(f"Deployment.factory must be 'module:callable', got {value!r}")


@attrs.frozen(eq=False)
class ExportSpec:
    """The modules a component holds, each with example inputs and dynamic axes, and
    optionally how to rebuild the component around exported copies of them
    (:class:`Deployment`)."""

    modules: tuple[ExportedModule, ...] = attrs.field(converter=tuple)
    deployment: Deployment | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        names = [m.name for m in self.modules]
        if len(set(names)) != len(names):
            raise ValueError(f"export spec names a module twice: {names}")

    def __iter__(self) -> Iterator[ExportedModule]:
        return iter(self.modules)

    def module_list(self) -> list[torch.nn.Module]:
        return [m.module for m in self.modules]


@runtime_checkable
class Exportable(Protocol):
    """A component that holds modules: ``export_spec()`` names them (no attribute walking)."""

    def export_spec(self) -> ExportSpec: ...
