"""The engine: build pipelines from recipes or graphs, and run requests through them.

Example::

    from t2i import Engine
    pipe = Engine.build("ldm-shapes", sampler="DPM++ 2M Karras")
    result = pipe("a large red circle on the left", steps=25, seed=7)
    result.save("out.png")
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import structlog
import torch

from t2i.contracts import MODEL_CONTRACTS, Exportable
from t2i.diffusion.names import resolve_sampler_name
from t2i.graph.errors import GraphValidationError
from t2i.graph.executor import Executor
from t2i.graph.graph import Graph, OutputRef
from t2i.graph.nodes import SEED_RANGE
from t2i.kinds import TOKENS
from t2i.modules import copy_with_tensors, held_modules
from t2i.plugins import get_plugin_manager
from t2i.recipe import Recipe
from t2i.registry.manager import PluginManager
from t2i.request import (
    REQUEST_FIELDS,
    GenerationRequest,
    RequestError,
    check_bound_values,
    check_components,
    check_guidance_options,
    check_sampler_options,
    decode_init_image,
    decode_mask,
    options_problem,
)
from t2i.result import GenerationResult, infotext_for

log = structlog.get_logger("t2i.engine")

COMPONENT_NODES = {
    "tokenizer": "LoadTokenizer",
    "text_encoder": "LoadTextEncoder",
    "denoiser": "LoadDenoiser",
    "decoder": "LoadDecoder",
}
"""Override keys that swap a component in any recipe, and the node type that loads it."""


class EngineError(ValueError):
    """A recipe, override or graph that cannot be built; the message says the fix."""


class Engine:
    """Entry point: :meth:`build` a recipe or load a graph into a :class:`Pipeline`."""

    @staticmethod
    def build(
        recipe: str | None = None,
        *,
        plugins: PluginManager | None = None,
        device: Any = None,
        dtype: Any = None,
        runtime: str | None = None,
        compile: bool = False,
        fp8: bool = False,
        **overrides: Any,
    ) -> Pipeline:
        """Build the registered recipe ``recipe`` with ``overrides``.

        Overrides are, in order of precedence: options of the recipe factory
        (``checkpoint="model.safetensors"``), a component swap by kind
        (``text_encoder="other.encoder"`` or ``decoder={"name": ..., "options": {...}}``),
        or a request default (``sampler="euler"``, ``guidance="dynamic"``, ``steps=30``, or a
        field only the recipe binds, such as ``top_k=16`` on ``dalle-shapes``).

        ``runtime`` names an inference runtime other than torch (entry point group
        ``t2i.runtimes``, e.g. ``"onnx"`` from the t2i_onnx plugin); overrides prefixed with
        its name are its options (``onnx_dir=DIR``). A runtime may name the recipe (and its
        options) itself, so ``recipe`` may then be None.

        ``compile=True`` is the fast path (:meth:`Pipeline.compile`): the denoiser's and the
        decoder's torch modules are loaded now and compiled with ``torch.compile`` (on CUDA
        also channels-last, TF32 and CUDA graphs); the first image pays the compilation,
        logged as ``compile_warmup``, and a later process reuses the compiled artifacts from
        the cache folder (:func:`cache_dir`).

        ``fp8=True`` (opt-in, lossy; eager or with ``compile=True``) converts the denoiser's
        linear layers to FP8 (E4M3) weights and matmuls (:meth:`Pipeline.quantize_fp8`), on
        Ada / Hopper GPUs or the CPU.
        """
        manager = plugins or get_plugin_manager()
        backend, runtime_options = None, {}
        for flag, on in (("compile", compile), ("fp8", fp8)):
            if on and runtime not in (None, "torch"):
                raise EngineError(
                    f"{flag}=True changes torch modules; runtime {runtime!r} runs none: drop one"
                )
        if runtime not in (None, "torch"):
            backend = load_runtime(runtime)
            prefix = f"{runtime}_"
            runtime_options = {
                k[len(prefix) :]: overrides.pop(k) for k in list(overrides) if k.startswith(prefix)
            }
            recipe, recorded = backend.recipe(recipe, plugins=manager, **runtime_options)
            overrides = {**recorded, **overrides}
        if recipe is None:
            raise EngineError("name a recipe (see `t2i recipes`)")
        entry = manager.registry.get("recipe", recipe)
        adapt = _pop_adaptation(entry.factory, overrides)
        factory_opts, swaps, defaults, unknown = _split_overrides(entry.factory, overrides)
        problem = options_problem(entry.factory, factory_opts)
        if problem:  # only the call's own binding: a TypeError inside the factory is not this
            raise EngineError(f"recipe {entry.name!r} rejected its options: {problem}")
        built: Recipe = entry.create(**factory_opts)
        built = attrs.evolve(built, name=entry.name)
        defaults.update(_bound_defaults(entry.factory, built, unknown))
        for kind, value in swaps.items():
            if not _is_component_spec(value):
                raise EngineError(
                    f"override {kind}= must be a registered {kind} name or "
                    f"{{'name': NAME, 'options': {{...}}}}, got {value!r}"
                )
            for graph in (built.graph, built.img2img_graph):
                if graph is not None:
                    _swap_component(graph, kind, value)
        for graph in (built.graph, built.img2img_graph):
            if graph is not None:
                _adapt_loaders(graph, adapt)
        pipe = Pipeline(built, manager, defaults=defaults, device=device, dtype=dtype)
        pipe.lora_dir = adapt.get("lora_dir")
        if backend is not None:
            backend.apply(pipe, **runtime_options)
        if fp8:
            pipe.quantize_fp8()
        if compile:
            pipe.compile()
        return pipe

    @staticmethod
    def from_graph(
        source: Graph | str | Path | Mapping[str, Any],
        *,
        plugins: PluginManager | None = None,
        device: Any = None,
        dtype: Any = None,
        compile: bool = False,
        fp8: bool = False,
        **defaults: Any,
    ) -> Pipeline:
        """A pipeline from a graph: a :class:`Graph`, its JSON dict, or a JSON file's path.

        JSON *text* goes through :meth:`Graph.from_json` first. Errors in the file raise
        :class:`~t2i.graph.errors.GraphValidationError` naming the file, node and field.

        The graph's ``meta`` may hold ``output`` (``[node, output]``), ``bindings`` and
        ``defaults``; without ``output`` the first node output of type IMAGE is used.
        """
        manager = plugins or get_plugin_manager()
        if isinstance(source, Graph):
            graph = source
        elif isinstance(source, Mapping):
            graph = Graph.from_dict(source)
        else:
            graph = Graph.from_file(source)
        graph.validate(manager.registry)
        meta = graph.meta
        if "output" in meta:
            output = _meta_output(graph, meta["output"], manager)
        else:
            output = _first_image_output(graph, manager)
        try:
            recipe = Recipe.from_graph(graph, output)
        except (TypeError, ValueError) as exc:
            raise EngineError(f"graph meta: {exc}") from exc
        pipe = Pipeline(recipe, manager, defaults=defaults, device=device, dtype=dtype)
        if fp8:
            pipe.quantize_fp8()
        if compile:
            pipe.compile()
        return pipe


RUNTIMES_GROUP = "t2i.runtimes"
"""Entry point group of inference runtimes: an object with ``recipe(recipe, plugins=manager,
**options) -> (recipe name, recipe options)`` (``recipe``: the name or alias asked for, or
None; ``plugins``: the build's plugin manager, to look recipes up in) and
``apply(pipeline, **options)``, which puts its own components in place of the torch ones
(:meth:`Pipeline.map_components`)."""


def load_runtime(name: str) -> Any:
    """The runtime registered as ``name`` in :data:`RUNTIMES_GROUP`, else an EngineError."""
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=RUNTIMES_GROUP)}
    if name not in found:
        known = ", ".join(["torch", *sorted(found)])
        hint = " (pip install -e plugins/t2i_onnx)" if name == "onnx" else ""
        raise EngineError(f"unknown runtime {name!r}{hint}; installed: {known}")
    return found[name].load()


ADAPT_OVERRIDES = ("lora", "lora_scale", "weights", "lora_dir")
"""Overrides every recipe takes unless its factory takes them itself (:mod:`t2i.lora`):
``lora`` (a path or a list of paths / ``(path, scale)``), ``lora_scale`` (default 1.0),
``weights`` (a folder with ``denoiser.safetensors`` / ``text_encoder.safetensors`` of a full
fine-tune), ``lora_dir`` (where a prompt's ``<lora:NAME:w>`` finds ``NAME.safetensors``)."""


def _pop_adaptation(factory: Callable[..., Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Take the :data:`ADAPT_OVERRIDES` the factory does not take itself; check them."""
    from t2i.checkpoints import CheckpointError
    from t2i.lora import check_lora_paths, parse_loras

    try:
        own = set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        own = set()
    taken = {k: overrides.pop(k) for k in ADAPT_OVERRIDES if k in overrides and k not in own}
    scale = taken.get("lora_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise EngineError(f"lora_scale must be a number, got {scale!r}")
    try:
        loras = parse_loras(taken.get("lora"), scale)
        check_lora_paths(loras)
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    weights = {}
    if taken.get("weights") is not None:
        folder = Path(taken["weights"])
        weights = {
            kind: str(folder / f"{kind}.safetensors")
            for kind in ("denoiser", "text_encoder")
            if (folder / f"{kind}.safetensors").is_file()
        }
        if not weights:
            raise CheckpointError(
                "no denoiser.safetensors or text_encoder.safetensors here",
                path=folder,
                fix="pass weights= the model/ folder of a full fine-tune (t2i dreambooth)",
            )
    lora_dir = taken.get("lora_dir")
    return {"loras": loras, "weights": weights, "lora_dir": lora_dir and str(lora_dir)}


def _adapt_loaders(graph: Graph, adapt: Mapping[str, Any]) -> None:
    """Set ``loras`` / ``weights`` on the graph's denoiser and text-encoder loaders."""
    for kind in ("denoiser", "text_encoder"):
        for node in graph:
            if node.type != COMPONENT_NODES[kind]:
                continue
            if adapt.get("loras"):
                graph.replace(node.id, loras=[list(x) for x in adapt["loras"]])
            if kind in adapt.get("weights", {}):
                graph.replace(node.id, weights=adapt["weights"][kind])


def _split_overrides(factory: Callable[..., Any], overrides: Mapping[str, Any]):
    try:
        sig = inspect.signature(factory)
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        accepted = {n for n, p in sig.parameters.items() if p.kind is not p.VAR_KEYWORD}
    except (TypeError, ValueError):
        accepts_any, accepted = True, set()
    factory_opts, swaps, defaults, unknown = {}, {}, {}, {}
    for key, value in overrides.items():
        if key in accepted:
            factory_opts[key] = value
        elif key in COMPONENT_NODES:
            swaps[key] = value
        elif key in REQUEST_FIELDS:
            defaults[key] = value
        elif accepts_any:
            factory_opts[key] = value
        else:  # a field only the built recipe binds (DALL-E's top_k), or a mistake
            unknown[key] = value
    return factory_opts, swaps, defaults, unknown


def _bound_defaults(factory: Any, built: Recipe, unknown: dict[str, Any]) -> dict[str, Any]:
    """``unknown`` overrides that the built recipe binds to a node parameter (its extra
    request fields, e.g. ``top_k``): request defaults like ``steps=30``; any other key is an
    error listing what the build accepts."""
    bound = set(built.bindings or {}) | set(built.img2img_bindings or {})
    for key in unknown:
        if key not in bound:
            try:
                accepted = set(inspect.signature(factory).parameters)
            except (TypeError, ValueError):
                accepted = set()
            allowed = sorted(accepted | set(COMPONENT_NODES) | set(REQUEST_FIELDS) | bound)
            raise EngineError(f"unknown override {key!r}; allowed: {', '.join(allowed)}")
    return dict(unknown)


def _is_component_spec(value: Any) -> bool:
    """A component override: a name, or ``{"name": str, "options": dict}``."""
    if isinstance(value, str):
        return True
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("name"), str)
        and isinstance(value.get("options", {}), Mapping)
        and set(value) <= {"name", "options"}
    )


def _swap_component(graph: Graph, kind: str, value: Any) -> None:
    node_type = COMPONENT_NODES[kind]
    nodes = [n for n in graph if n.type == node_type]
    if len(nodes) != 1:
        raise EngineError(
            f"cannot swap {kind}: the graph has {len(nodes)} {node_type} nodes; "
            f"edit the graph instead (pipeline.graph.replace(...))"
        )
    if isinstance(value, Mapping):
        graph.replace(nodes[0].id, name=value["name"], options=dict(value.get("options", {})))
    else:
        graph.replace(nodes[0].id, name=value, options={})


def _meta_output(graph: Graph, value: Any, manager: PluginManager) -> OutputRef:
    """A graph's ``meta.output``: ``[node_id, output_name]`` naming one of its outputs."""
    if not (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, str) for v in value)
    ):
        raise GraphValidationError(f"meta.output must be [node_id, output_name], got {value!r}")
    node_id, name = value
    if node_id not in graph:
        raise GraphValidationError(f"meta.output names a missing node {node_id!r}")
    cls = manager.registry.get_node_type(graph[node_id].type)
    if cls.output(name) is None:
        outputs = ", ".join(p.name for p in cls.outputs) or "(none)"
        raise GraphValidationError(
            f"meta.output: {graph[node_id].type} has no output {name!r}; outputs are {outputs}",
            node=node_id,
        )
    return OutputRef(node_id, name)


def _first_image_output(graph: Graph, manager: PluginManager) -> OutputRef:
    for nid in reversed(graph.topological_order()):
        cls = manager.registry.get_node_type(graph[nid].type)
        for port in cls.outputs:
            if port.type == "IMAGE":
                return OutputRef(nid, port.name)
    raise EngineError("the graph has no IMAGE output; set meta.output to [node, output]")


def _device(device: Any) -> torch.device:
    """``device`` as a :class:`torch.device` that exists here, else an :class:`EngineError`."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EngineError(
            f"device {device!r} is not a device name: use cpu, cuda, cuda:1 or mps"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EngineError(f"device {device!r}: CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EngineError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA devices"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise EngineError(f"device {device!r}: MPS is not available here; use --device cpu")
    return dev


def _is_automatic(schedule: Any) -> bool:
    """The web UI's schedule type "Automatic": the sampler's own default."""
    return isinstance(schedule, str) and schedule.strip().lower() == "automatic"


def _modules_of(component: Any) -> list[torch.nn.Module]:
    """The ``nn.Module`` s a component holds: its export spec's, or itself if it is one."""
    if isinstance(component, Exportable):
        return component.export_spec().module_list()
    if isinstance(component, torch.nn.Module):
        return [component]
    return []


class Pipeline:
    """A built recipe, ready to run requests. Reuses its executor cache across calls."""

    def __init__(
        self,
        recipe: Recipe,
        manager: PluginManager,
        *,
        defaults: Mapping[str, Any],
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        self.recipe = recipe
        self.manager = manager
        self.device = _device(device)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype
        self.defaults = {**recipe.defaults, **defaults}
        self.executor = Executor(
            manager.registry, manager.registry, device=self.device, dtype=dtype
        )
        self.cancel_event = threading.Event()
        self.lora_dir: str | None = None
        self._label_cache: dict[tuple[str, str | None], tuple[str, str | None]] = {}
        self._check_contracts(self._resolve(self.defaults))

    # -- introspection -------------------------------------------------------------------
    @property
    def graph(self) -> Graph:
        return self.recipe.graph

    def components(self) -> dict[str, str]:
        """Role (node id) -> registered component name, for metadata."""
        return {
            n.id: n.params.get("name", "") for n in self.graph if n.type in COMPONENT_NODES.values()
        }

    def _entries(self) -> list[Any]:
        """Registry entries of the recipe and of every component the graph loads."""
        reg = self.manager.registry
        kinds = {node: kind for kind, node in COMPONENT_NODES.items()}
        entries = [reg.get(kinds[n.type], n.params["name"]) for n in self.graph if n.type in kinds]
        if self.recipe.name and reg.has("recipe", self.recipe.name):
            entries.append(reg.get("recipe", self.recipe.name))
        return entries

    def plugin_versions(self) -> dict[str, str]:
        """Plugin -> version, for every plugin that contributes a part of this pipeline."""
        records = self.manager.records
        return {
            e.plugin: records[e.plugin].version if e.plugin in records else ""
            for e in self._entries()
        }

    def parameter_count(self) -> int:
        """Parameters of every ``torch.nn.Module`` component the graph loads."""
        total = 0
        results = self.executor.run(
            self.graph, outputs=[n.id for n in self.graph if n.type in COMPONENT_NODES.values()]
        )
        seen: set[int] = set()
        for outs in results.values():
            for value in outs.values():
                for module in _modules_of(value):
                    for p in module.parameters():
                        if id(p) not in seen:
                            seen.add(id(p))
                            total += p.numel()
        return total

    def map_components(self, replace: Callable[[str, str, Any], Any]) -> None:
        """Put ``replace(node_id, kind, component)`` in place of every component the graphs
        load (once per loaded component; kept in this pipeline's executor cache, so later runs
        use it while the loader's parameters stay the same). Runtimes use it."""
        kinds = {node: kind for kind, node in COMPONENT_NODES.items()}
        done: set[int] = set()
        for graph in (self.recipe.graph, self.recipe.img2img_graph):
            if graph is None:
                continue
            ids = [n.id for n in graph if n.type in kinds]
            results = self.executor.run(graph, outputs=ids)
            for nid in ids:
                outs = results[nid]  # the executor's cached dict: replaced in place
                if id(outs) in done:
                    continue
                done.add(id(outs))
                for port, value in outs.items():
                    outs[port] = replace(nid, kinds[graph[nid].type], value)

    def provide_components(self, provide: Callable[[str, str, Mapping[str, Any]], Any]) -> list:
        """Put ``provide(node_id, kind, params)`` in place of every component loader whose
        call returns a component (not None), *without running the loader*: the result goes in
        this pipeline's executor cache, kept while the loader's parameters stay the same. A
        runtime whose components need none of the family's model code uses it; returns the
        node ids provided."""
        kinds = {node: kind for kind, node in COMPONENT_NODES.items()}
        provided: list[str] = []
        for graph in (self.recipe.graph, self.recipe.img2img_graph):
            if graph is None:
                continue
            for node in [n for n in graph if n.type in kinds]:
                component = provide(node.id, kinds[node.type], dict(node.params))
                if component is None:
                    continue
                output = self.manager.registry.get_node_type(node.type).outputs[0].name
                self.executor.prime(graph, node.id, {output: component})
                if node.id not in provided:
                    provided.append(node.id)
        return provided

    def compile(
        self, *, backend: str | None = None, mode: str | None = None, fuse: bool = True
    ) -> list[str]:
        """The fast path (``Engine.build(..., compile=True)``): compile, in place, the torch
        modules of every denoiser and decoder the graphs load (:func:`compile_component`).
        ``fuse`` (default on, on every device: it is lossless) first fuses what the modules
        offer to fuse (``fuse_projections()``: the SD UNet's q/k/v matmuls). A token predictor
        (whose KV cache grows per token) is compiled only when it offers
        ``compile_token_loop(backend=, mode=, **compile_component options)``, a loop of fixed shapes
        (DALL-E's static KV cache); others stay eager.

        ``backend`` / ``mode`` default to ``$T2I_COMPILE_BACKEND`` (else ``inductor``) and
        ``$T2I_COMPILE_MODE`` (else ``reduce-overhead``, CUDA graphs, on CUDA with inductor;
        Inductor's default elsewhere). Inductor's caches default to :func:`cache_dir`. On CUDA
        it also turns TF32 on for float32 matmuls and convolutions (process-wide) and puts
        convolutional modules in channels-last. Returns the compiled modules' names
        (``"unet.forward"``, ``"vae.decode"``, ...).
        """
        backend = backend or os.environ.get(COMPILE_BACKEND_ENV, "").strip() or "inductor"
        if mode is None:
            mode = os.environ.get(COMPILE_MODE_ENV, "").strip() or None
            if mode is None and backend == "inductor" and self.device.type == "cuda":
                mode = "reduce-overhead"
        if mode in ("default", "none"):
            mode = None
        cache = use_compile_cache()
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        compiled: list[str] = []
        seen: set[int] = set()

        def replace(node_id: str, kind: str, component: Any) -> Any:
            if kind not in COMPILED_KINDS:
                return component
            if getattr(component, "model_contract", None) != TOKENS:
                compiled.extend(
                    compile_component(
                        component,
                        backend=backend,
                        mode=mode,
                        channels_last=cuda,
                        seen=seen,
                        fuse=fuse,
                    )
                )
            elif callable(getattr(component, "compile_token_loop", None)):  # fixed shapes
                compiled.extend(
                    component.compile_token_loop(backend=backend, mode=mode, seen=seen, fuse=fuse)
                )
            return component

        self.map_components(replace)
        log.info(
            "compile_enabled", modules=compiled, backend=backend, mode=mode or "default",
            tf32=cuda, channels_last=cuda, fuse=fuse, cache_dir=cache,
        )  # fmt: skip
        return compiled

    def quantize_fp8(
        self, *, min_features: int | None = None, skip: Sequence[str] = ()
    ) -> list[str]:
        """FP8 (``Engine.build(..., fp8=True)``): the eligible ``nn.Linear`` layers of every
        denoiser the graphs load (:data:`FP8_KINDS`) become :class:`t2i.fp8.Float8Linear`
        (E4M3 weight, per-row scales, activations quantized at each call; lossy). Each
        denoiser is replaced by a copy sharing its other tensors, so a loader's cached model
        stays as it was (a per-prompt LoRA re-runs the loader and gets an unconverted copy).
        ``min_features`` / ``skip``: :func:`t2i.fp8.convert_linears_to_fp8`. Logs
        ``fp8_enabled``; returns the converted layers (``"unet.input_blocks.1.1..."``).

        Raises:
            EngineError: a device without FP8 (CUDA before Ada, another backend).
        """
        from t2i.fp8 import MIN_FEATURES, convert_linears_to_fp8, fp8_device_problem

        problem = fp8_device_problem(self.device)
        if problem:
            raise EngineError(problem)
        width = MIN_FEATURES if min_features is None else min_features
        converted: list[str] = []
        done: dict[int, Any] = {}

        def replace(node_id: str, kind: str, component: Any) -> Any:
            modules = held_modules(component)
            if kind not in FP8_KINDS or not modules:
                return component
            if id(component) not in done:
                copied = copy_with_tensors(component)
                for path, module in held_modules(copied).items():
                    names = convert_linears_to_fp8(module, min_features=width, skip=skip)
                    converted.extend(f"{path}.{n}" if path else n for n in names)
                done[id(component)] = copied
            return done[id(component)]

        self.map_components(replace)
        log.info("fp8_enabled", layers=len(converted), kinds=list(FP8_KINDS), min_features=width)
        return converted

    def _bindings(self, img2img: bool):
        if img2img:
            return self.recipe.img2img_bindings or self.recipe.bindings
        return self.recipe.bindings

    def _resolve(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with sampler, schedule and guidance as canonical registered names.

        A web-UI name such as "DPM++ 2M Karras" becomes sampler ``dpmpp_2m`` + schedule
        ``karras`` here, once per request; without a schedule (or with "Automatic", the web
        UI's default) the sampler's own default is written in, so the graph and the
        infotext say what runs. Unknown names raise
        :class:`~t2i.registry.errors.UnknownComponentError` listing close matches.
        """
        reg = self.manager.registry
        out = dict(values)
        sampler = values.get("sampler")
        if _is_automatic(values.get("schedule")):
            values = {**values, "schedule": None}
            out["schedule"] = None
        if sampler is not None:
            name, from_name = resolve_sampler_name(sampler, reg)
            out["sampler"] = name
            schedule = values.get("schedule") or from_name
            if schedule is None and "schedule" in self._all_bindings():
                schedule = getattr(reg.get("sampler", name).factory, "default_schedule", None)
            if schedule is not None:
                out["schedule"] = reg.get("schedule", schedule).name
        elif values.get("schedule"):
            out["schedule"] = reg.get("schedule", values["schedule"]).name
        if values.get("guidance"):
            out["guidance"] = reg.get("guidance", values["guidance"]).name
        return out

    def _all_bindings(self) -> dict[str, Any]:
        return {**self.recipe.bindings, **(self.recipe.img2img_bindings or {})}

    def field_type(self, field: str) -> type | tuple[type, ...] | None:
        """The parameter type a recipe-bound request field sets (its first target's), or
        None for a field the recipe does not bind."""
        targets = self._all_bindings().get(field)
        if not targets:
            return None
        node_id, param = targets[0]
        graph = self.recipe.graph if node_id in self.recipe.graph else self.recipe.img2img_graph
        spec = self.manager.registry.get_node_type(graph[node_id].type).param(param)
        return None if spec is None else spec.type

    def _effective(self, graph: Graph, node_id: str, param: str, values: Mapping[str, Any]) -> Any:
        """What ``node_id.param`` will be for a request with ``values``."""
        for field, targets in self._all_bindings().items():
            if (node_id, param) in targets and values.get(field) is not None:
                return values[field]
        node = graph[node_id]
        if param in node.params:
            return node.params[param]
        spec = self.manager.registry.get_node_type(node.type).param(param)
        return None if spec is None or spec.required else spec.default

    def _check_contracts(self, values: Mapping[str, Any]) -> None:
        """Refuse a guidance, sampler or denoiser that does not fit its sampling node."""
        for graph in (self.recipe.graph, self.recipe.img2img_graph):
            if graph is None:
                continue
            for node in graph:
                cls = self.manager.registry.get_node_type(node.type)
                contract = getattr(cls, "model_contract", None)
                if contract is not None:
                    self._check_sampling_node(graph, node, contract, values)

    def _check_sampling_node(self, graph: Graph, node: Any, contract: str, values) -> None:
        reg = self.manager.registry
        guide_ref = node.inputs.get("guided")
        guide = graph[guide_ref.node] if guide_ref is not None else None
        model_ref = guide.inputs.get("model") if guide is not None else None
        model_node = graph[model_ref.node] if model_ref is not None else None
        denoiser = ""
        if model_node is not None and model_node.type == COMPONENT_NODES["denoiser"]:
            denoiser = model_node.params.get("name", "")
        parts = [("sampler", self._effective(graph, node.id, "sampler", values))]
        if guide is not None:
            parts.append(("guidance", self._effective(graph, guide.id, "guidance", values)))
        if denoiser:
            parts.append(("denoiser", denoiser))
        for kind, name in parts:
            if not name:
                continue
            declared = reg.get(kind, name).model_contract
            if declared is None or declared == contract:
                continue
            fitting = [e.name for e in reg.entries(kind) if e.model_contract in (None, contract)]
            raise EngineError(
                f"{kind} {name!r} works on {MODEL_CONTRACTS.get(declared, declared)}, but "
                f"recipe {self.recipe.name!r} samples {MODEL_CONTRACTS.get(contract, contract)}"
                + (f" ({denoiser!r})" if denoiser and kind != "denoiser" else "")
                + f" in node {node.id!r}; {kind}s that fit: {', '.join(fitting) or 'none'}"
            )

    # -- running -------------------------------------------------------------------------
    def make_request(self, prompt: str | None = None, **fields: Any) -> GenerationRequest:
        """Merge recipe defaults, build defaults and ``fields`` into a validated request."""
        values = {**self.defaults, **fields}
        if prompt is not None:
            values["prompt"] = prompt
        img2img = values.get("init_image") is not None
        if img2img and self.recipe.img2img_graph is None:
            raise RequestError("init_image", f"recipe {self.recipe.name!r} has no img2img graph")
        if not img2img and self.recipe.requires_init_image:
            raise RequestError(
                "init_image",
                f"{self.recipe.name!r} is an img2img graph: give an init image "
                "(init_image=..., or t2i run --init-image PNG)",
            )
        bindings = self._bindings(img2img)
        known = {k: v for k, v in values.items() if k in REQUEST_FIELDS}
        extra = {k: v for k, v in values.items() if k not in REQUEST_FIELDS}
        for key in extra:
            if key not in bindings:
                allowed = ", ".join(sorted(set(REQUEST_FIELDS) | set(bindings)))
                raise RequestError(
                    key, f"unknown field for recipe {self.recipe.name!r}; allowed: {allowed}"
                )
        request = GenerationRequest(**known, extra=extra)
        m = self.recipe.size_multiple
        for field in ("width", "height"):
            value = getattr(request, field)
            if m > 1 and value % m:
                raise RequestError(
                    field,
                    f"must be a multiple of {m} for recipe "
                    f"{self.recipe.name!r}, got {value}; try {value - value % m or m}",
                )
        self._check_variation(request, bindings)
        self._prompt_loras(request.prompt)  # a tag naming no file fails here
        if request.init_image is not None:
            request = attrs.evolve(request, init_image=decode_init_image(request.init_image))
        if request.mask is not None:
            if "mask" not in self._bindings(True):
                raise RequestError("mask", f"recipe {self.recipe.name!r} does not inpaint")
            request = attrs.evolve(request, mask=decode_mask(request.mask, request.init_image))
        resolved = self._resolve(
            {"sampler": request.sampler, "schedule": request.schedule, "guidance": request.guidance}
        )
        request = attrs.evolve(request, **resolved)
        values = attrs.asdict(request, recurse=False) | request.extra
        self._check_contracts(values)
        self._check_graph_inputs(values, img2img)
        return request

    def _check_variation(self, request: GenerationRequest, bindings: Mapping[str, Any]) -> None:
        """Refuse variation seeds / a seed resize that this recipe's graph cannot apply."""
        asked = [
            f
            for f, on in (
                ("subseed_strength", request.subseed_strength > 0),
                ("seed_resize_from_w", request.seed_resize_from is not None),
            )
            if on
        ]
        for field in asked:
            if field not in bindings:
                raise RequestError(
                    field,
                    f"recipe {self.recipe.name!r} does not bind variation seeds (its graph "
                    "draws no seeded diffusion noise through EmptyLatent); leave it at 0",
                )

    def _check_graph_inputs(self, values: Mapping[str, Any], img2img: bool) -> None:
        """Components, bound parameters, guidance and sampler options of the graph to run."""
        graph = self.recipe.img2img_graph if img2img else self.recipe.graph
        reg = self.manager.registry
        check_components(graph, reg, {node: kind for kind, node in COMPONENT_NODES.items()})
        bindings = self._bindings(img2img)
        check_bound_values(values, bindings, graph, reg)
        for node in graph:
            if node.type == "Guide":
                check_guidance_options(
                    self._effective(graph, node.id, "guidance", values),
                    self._effective(graph, node.id, "guidance_options", values),
                    self._effective(graph, node.id, "cfg_scale", values),
                    reg,
                )
            cls = reg.get_node_type(node.type)
            if getattr(cls, "model_contract", None) and cls.param("sampler") is not None:
                params = {
                    p.name: self._effective(graph, node.id, p.name, values)
                    for p in cls.params
                    if p.name != "sampler"
                }
                fields = {
                    p: f for f, targets in bindings.items() for n, p in targets if n == node.id
                }
                sampler = self._effective(graph, node.id, "sampler", values)
                check_sampler_options(reg.get("sampler", sampler), params, fields)

    def __call__(
        self,
        prompt: str | None = None,
        *,
        progress: Callable[[str, int, int], None] | None = None,
        on_node: Callable[[str, str, str], None] | None = None,
        on_batch: Callable[[GenerationResult], None] | None = None,
        preview: Callable[[str, int, int, Any], None] | None = None,
        **fields: Any,
    ) -> GenerationResult:
        """Generate images for ``prompt`` (fields: :class:`~t2i.request.GenerationRequest`)."""
        request = self.make_request(prompt, **fields)
        return self.run(
            request, progress=progress, on_node=on_node, on_batch=on_batch, preview=preview
        )

    def run(
        self,
        request: GenerationRequest,
        *,
        progress=None,
        on_node=None,
        on_batch=None,
        preview: Callable[[str, int, int, Any], None] | None = None,
    ) -> GenerationResult:
        """Run ``request``: ``batch_count`` batches of ``batch_size`` images.

        ``on_batch(result)`` receives each batch's images as soon as it is done (the CLI
        saves them there, so an interrupt keeps every finished batch).
        ``preview(node_id, step, total, value)`` receives a sampling node's intermediate
        sample, in the space its decoder reads (the web UIs' live preview): a diffusion
        sampler's prediction of the clean sample ``x0`` after every step (``(B, C, H, W)``,
        latent for a latent model); a token sampler's partial grid ``(B, 1, h, w)`` after
        every grid row (:data:`~t2i.contracts.UNDRAWN` where no token is drawn yet: decode it
        with the decoder's ``decode_preview``); a single pass's finished sample, once.
        """
        img2img = request.init_image is not None
        graph = self.recipe.img2img_graph if img2img else self.recipe.graph
        bindings = self._bindings(img2img)
        base_seed = request.resolved_seed()
        fixed_seed = request.subseed_strength > 0  # A1111: every image keeps the seed
        # a random subseed only when it is used: an unchanged request stays fully cached
        base_subseed = request.resolved_subseed() if fixed_seed else max(request.subseed, 0)
        values = attrs.asdict(request, recurse=False)
        values.update(values.pop("extra"))
        images, seeds, prompts, infotexts = [], [], [], []
        started = time.perf_counter()
        self.cancel_event.clear()
        prompt, tagged = self._prompt_loras(request.prompt)
        for b in range(request.batch_count):
            seed = (base_seed + (0 if fixed_seed else b * request.batch_size)) % SEED_RANGE
            subseed = (base_subseed + b * request.batch_size) % SEED_RANGE
            run_values = {**values, "seed": seed, "subseed": subseed, "prompt": prompt}
            params: dict[str, dict[str, Any]] = self._lora_params(graph, tagged)
            for field, targets in bindings.items():
                if field not in run_values:
                    continue
                if run_values[field] is None:
                    continue
                for node_id, param in targets:
                    params.setdefault(node_id, {})[param] = run_values[field]
            log.info(
                "generate",
                recipe=self.recipe.name,
                batch=b,
                seed=seed,
                steps=request.steps,
                sampler=request.sampler,
            )
            results = self.executor.run(
                graph,
                params=params,
                outputs=[self.recipe.output_for(img2img).node],
                on_node=on_node,
                on_step=progress,
                cancel=self.cancel_event,
                on_preview=preview,
            )
            out = self.recipe.output_for(img2img)
            image = results[out.node][out.output]
            batch_images = image.to_pil()
            rows = range(len(batch_images))
            batch_seeds = [(seed + (0 if fixed_seed else i)) % SEED_RANGE for i in rows]
            batch_infos = [
                self._infotext(request, s, (subseed + i) % SEED_RANGE)
                for i, s in zip(rows, batch_seeds)
            ]
            images += batch_images
            seeds += batch_seeds
            prompts += [request.prompt] * len(batch_images)
            infotexts += batch_infos
            if on_batch is not None:
                meta = self._metadata(
                    request, base_seed, batch_seeds, time.perf_counter() - started, base_subseed
                )
                on_batch(
                    GenerationResult(
                        batch_images,
                        batch_seeds,
                        [request.prompt] * len(batch_images),
                        batch_infos,
                        meta,
                    )
                )
        elapsed = time.perf_counter() - started
        metadata = self._metadata(request, base_seed, seeds, elapsed, base_subseed)
        return GenerationResult(images, seeds, prompts, infotexts, metadata)

    def _prompt_loras(self, prompt: str) -> tuple[str, list[list[Any]]]:
        """The prompt without ``<lora:NAME:w>`` tags, and ``[file, w]`` of each tag."""
        if "<lora:" not in prompt:
            return prompt, []
        from t2i.lora import check_lora_paths, find_lora, prompt_loras

        try:
            text, tags = prompt_loras(prompt)
            found = [[find_lora(name, self.lora_dir), w] for name, w in tags]
            check_lora_paths(found)
        except ValueError as exc:
            raise RequestError("prompt", str(exc)) from exc
        return text, found

    def _lora_params(self, graph: Graph, tagged: list[list[Any]]) -> dict[str, dict[str, Any]]:
        """Node params that add a prompt's LoRAs to those the pipeline was built with."""
        if not tagged:
            return {}
        loaders = {COMPONENT_NODES["denoiser"], COMPONENT_NODES["text_encoder"]}
        return {
            n.id: {"loras": [*n.params.get("loras", []), *tagged]}
            for n in graph
            if n.type in loaders
        }

    def cancel(self) -> None:
        """Ask a running call to stop at the next node or step."""
        self.cancel_event.set()

    def _labels(self, request: GenerationRequest) -> tuple[str, str | None]:
        """The web-UI labels of the request's (already resolved) sampler and schedule."""
        key = (request.sampler, request.schedule)
        if key not in self._label_cache:  # every image's infotext asks
            self._label_cache[key] = self._lookup_labels(request)
        return self._label_cache[key]

    def _lookup_labels(self, request: GenerationRequest) -> tuple[str, str | None]:
        reg = self.manager.registry
        entry = reg.get("sampler", request.sampler)
        label = entry.aliases[0] if entry.aliases else entry.name
        sched_label = None
        if request.schedule and "schedule" in self._all_bindings():
            s_entry = reg.get("schedule", request.schedule)
            sched_label = s_entry.aliases[0] if s_entry.aliases else s_entry.name
        return label, sched_label

    def _infotext(self, request: GenerationRequest, seed: int, subseed: int | None = None) -> str:
        from t2i.version import __version__

        sampler_label, schedule_label = self._labels(request)
        return infotext_for(
            request,
            seed,
            request.prompt,
            subseed=subseed,
            sampler_label=sampler_label,
            schedule_label=schedule_label,
            model_name=self.recipe.model_name or self.recipe.name,
            version=__version__,
            extras={**self.recipe.infotext, **self._field_extras(request)},
            model_hash=self.recipe.model_hash,
        )

    def _field_extras(self, request: GenerationRequest) -> dict[str, Any]:
        """The recipe's :attr:`~t2i.recipe.Recipe.infotext_fields` with this request's values
        (its extra fields, else the recipe's defaults); unset ones are left out."""
        values = {**self.recipe.defaults, **request.extra}
        img2img = request.init_image is not None
        graph = self.recipe.img2img_graph if img2img else self.recipe.graph
        bindings = self._bindings(img2img)
        out = {}
        for field, label in self.recipe.infotext_fields.items():
            value = values.get(field)
            if value is None and field in bindings:  # unset: what its node runs with,
                node_id, param = bindings[field][0]  # unless another field sets that too
                shared = any(
                    (node_id, param) in t for f, t in bindings.items() if f != field
                )
                value = None if shared else self._effective(graph, node_id, param, values)
            value = value if value not in ("", 0) or field in values else None
            default = self.recipe.defaults.get(field)
            if isinstance(default, float) and type(value) is int:  # a form's 1 is the 1.0 default
                value = float(value)
            if value is not None:
                out[label] = value
        return out

    def _metadata(self, request, base_seed, seeds, elapsed, base_subseed=None) -> dict[str, Any]:
        from t2i.version import __version__

        params = attrs.asdict(request, recurse=False)
        params["init_image"] = None if request.init_image is None else "<image>"
        params["mask"] = None if request.mask is None else "<image>"
        params["seed"] = base_seed
        if request.uses_variation and base_subseed is not None:
            params["subseed"] = base_subseed
        sampler, schedule = self._labels(request)
        return {
            "t2i_version": __version__,
            "recipe": self.recipe.name,
            "parameters": params,
            "seeds": list(seeds),
            "sampler_label": sampler,
            "schedule_label": schedule,
            "components": self.components(),
            "plugins": self.plugin_versions(),
            "device": str(self.device),
            "dtype": str(self.dtype) if self.dtype is not None else "float32",
            "seconds": round(elapsed, 4),
        }


# -- the fast path: compiled modules ------------------------------------------------------

COMPILE_BACKEND_ENV = "T2I_COMPILE_BACKEND"
"""``torch.compile`` backend of :meth:`Pipeline.compile` (default ``inductor``); ``eager`` or
``aot_eager`` trace with Dynamo but generate no code (fast to warm: tests, CPU CI)."""

COMPILE_MODE_ENV = "T2I_COMPILE_MODE"
"""``torch.compile`` mode (``reduce-overhead`` on CUDA with inductor, else the default;
``default`` forces Inductor's default, e.g. to leave CUDA graphs off)."""

CACHE_DIR_ENV = "T2I_CACHE_DIR"
"""t2i's cache folder (default ``$XDG_CACHE_HOME/t2i``, else ``~/.cache/t2i``)."""

COMPILED_KINDS = ("denoiser", "decoder")
"""Component kinds :meth:`Pipeline.compile` compiles: the calls a generation repeats (each
sampling step, each decode). Text encoders run once per prompt and are cached, so their
compilation would cost more than it saves. Token predictors (``model_contract`` ``tokens``)
stay eager too: their KV cache gives each call a new shape."""

FP8_KINDS = ("denoiser",)
"""Component kinds :meth:`Pipeline.quantize_fp8` converts: the denoiser runs every step and
holds most of the matmuls; the text encoder and the decoder stay in their dtype."""



def cache_dir() -> Path:
    """t2i's cache folder: ``$T2I_CACHE_DIR``, else ``$XDG_CACHE_HOME/t2i``, else
    ``~/.cache/t2i``."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "t2i"


def use_compile_cache() -> str:
    """Point Inductor's on-disk caches (its FX graph and autograd caches, and Triton's kernels,
    which Inductor keeps under its own folder) at ``cache_dir() / "inductor"`` unless
    ``$TORCHINDUCTOR_CACHE_DIR`` already names another folder than torch's default (torch
    writes its default there once anything asked it); returns the folder in use. A second
    process then loads the compiled graphs instead of generating them again (warm start)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not folder or os.path.abspath(folder) == os.path.abspath(default_cache_dir()):
        folder = str(cache_dir() / "inductor")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    return folder


class _Compiled:
    """A compiled call with the eager one beside it: the eager call runs on fake tensors (the
    memory dry run of :mod:`t2i.memory`); the first real call is timed and logged as
    ``compile_warmup``; with CUDA graphs each call starts a new graph step and returns copies
    (the graph's outputs are overwritten by its next replay)."""

    def __init__(self, name: str, compiled: Callable, eager: Callable, *, backend, mode) -> None:
        self.name, self.compiled, self.eager = name, compiled, eager
        self.backend, self.mode = backend, mode
        self.cuda_graphs = mode is not None and "reduce-overhead" in mode
        self.warm = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from torch._guards import detect_fake_mode
        from torch.utils._pytree import tree_leaves, tree_map

        if detect_fake_mode([a for a in tree_leaves((args, kwargs)) if torch.is_tensor(a)]):
            return self.eager(*args, **kwargs)
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if self.warm:
            out = self.compiled(*args, **kwargs)
        else:
            from torch._dynamo.utils import counters

            breaks = sum(counters["graph_break"].values())
            start = time.perf_counter()
            out = self.compiled(*args, **kwargs)
            self.warm = True
            log.info(
                "compile_warmup",
                module=self.name,
                seconds=round(time.perf_counter() - start, 3),
                backend=self.backend,
                mode=self.mode or "default",
                graph_breaks=sum(counters["graph_break"].values()) - breaks,
            )
        if self.cuda_graphs:
            out = tree_map(lambda t: t.clone() if torch.is_tensor(t) else t, out)
        return out


def compile_component(
    component: Any,
    *,
    backend: str = "inductor",
    mode: str | None = None,
    channels_last: bool = False,
    seen: set[int] | None = None,
    fuse: bool = False,
) -> list[str]:
    """Compile, in place, the torch modules a component holds (:func:`held_modules`).

    Each module's ``forward`` is compiled as ``nn.Module.compile`` does (parameter names and
    state-dict keys stay as they were), and so is every method the module names in a
    ``compile_methods`` class attribute: the entry points its component calls other than
    ``forward`` (the SD VAE's ``("decode", "encode")``). ``channels_last`` converts modules
    holding 2-D convolutions. Modules in ``seen`` (ids) are skipped and added. Returns the
    compiled calls' names.

    ``fuse``: first call ``fuse_projections()`` on each module that defines it, a duck-typed
    protocol for lossless fusions of a family's layers (the SD UNet concatenates each
    attention's q/k/v weights so one matmul reads them: :mod:`t2i_ldm.unet`). The method
    fuses in place, returns how many layers it fused, keeps ``state_dict()`` as it was (the
    fused weights are non-persistent), is idempotent, never lets a fused copy go stale (a
    changed or LoRA-wrapped weight is re-fused or runs unfused) and has an inverse,
    ``unfuse_projections()``. Each fusion is logged as ``projections_fused``.
    """
    seen = set() if seen is None else seen
    names: list[str] = []
    for path, module in held_modules(component).items():
        if id(module) in seen:
            continue
        seen.add(id(module))
        label = path or type(module).__name__
        if fuse and callable(getattr(module, "fuse_projections", None)):
            log.info("projections_fused", module=label, layers=int(module.fuse_projections()))
        if channels_last and any(isinstance(m, torch.nn.Conv2d) for m in module.modules()):
            module.to(memory_format=torch.channels_last)
        module.compile(backend=backend, mode=mode)
        module._compiled_call_impl = _Compiled(
            f"{label}.forward", module._compiled_call_impl, module._call_impl,
            backend=backend, mode=mode,
        )  # fmt: skip
        names.append(f"{label}.forward")
        for method in getattr(type(module), "compile_methods", ()):
            eager = getattr(module, method)
            call = torch.compile(eager, backend=backend, mode=mode)
            wrapped = _Compiled(f"{label}.{method}", call, eager, backend=backend, mode=mode)
            object.__setattr__(module, method, wrapped)  # shadows the class's method
            names.append(f"{label}.{method}")
    return names
