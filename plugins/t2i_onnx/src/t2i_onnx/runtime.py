"""The ONNX runtime: a recipe run with ONNX Runtime sessions in place of its torch modules.

``Engine.build(runtime="onnx", onnx_dir=DIR)`` (recipe and options from the manifest) builds
the recipe's graph as the torch runtime does, then puts, in each component its export holds
models for, an :class:`OrtModule` where the exported module was: the component is copied with
the module replaced wherever the component refers to it (its weights shared, not copied), so
samplers, guidance, schedules, seeds and infotext are the torch runtime's own. An exported
module the component does not call itself (a wrapper the export spec made) replaces the
component method it stands for when the name says which (``vae_decoder`` -> ``decode``,
``vae_encoder`` -> ``encode``, :data:`ROLE_METHODS`); any other stays torch and is listed in
``pipeline.onnx_torch_fallback``.

Execution providers: ``--device cpu`` -> ``CPUExecutionProvider``; ``cuda[:i]`` ->
``CUDAExecutionProvider`` (package ``onnxruntime-gpu``), inputs and outputs bound to the
device (I/O binding). ``onnx_provider=NAME`` picks another provider.

A recipe factory that takes the keyword :data:`DEPLOYED_OPTION` gets what the export recorded
(:func:`deployed_info`), so it can build its graph without reading the model files whose
components the runtime provides (the ``ldm`` recipe on an SD checkpoint does).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from t2i.payloads import Image, Latent
from t2i_onnx.manifest import OnnxExportError, read_manifest

log = structlog.get_logger("t2i.onnx")

PROVIDER_PACKAGES = {
    "CPUExecutionProvider": "onnxruntime",
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "TensorrtExecutionProvider": "onnxruntime-gpu (with TensorRT)",
    "DmlExecutionProvider": "onnxruntime-directml",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "CoreMLExecutionProvider": "onnxruntime (macOS build)",
}
"""Execution provider -> the pip package that brings it."""


def providers_for(
    device: torch.device, provider: str | None = None, available: list[str] | None = None
) -> list[str]:
    """The execution providers for ``device`` (or the one named), checked to be installed."""
    import onnxruntime as ort

    available = ort.get_available_providers() if available is None else available
    if provider is None:
        provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in available:
        package = PROVIDER_PACKAGES.get(provider, "an onnxruntime build that has it")
        raise OnnxExportError(
            f"execution provider {provider} is not installed (this onnxruntime has "
            f"{', '.join(available)}); pip install {package}"
        )
    return [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]


class OrtModule(torch.nn.Module):
    """An ``nn.Module`` whose forward runs one ONNX Runtime session: torch tensors in (cast to
    the graph's input dtypes), torch tensors out (float outputs in the first float input's
    dtype, on the input's device). Attributes it lacks are read from the module it replaces
    (``config``, ``dtype``), and it holds one empty parameter of that module's dtype and device
    (``next(module.parameters())``), so callers that look at them still work."""

    def __init__(self, session: Any, replaces: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.input_dtypes = [_np_dtype(i.type) for i in session.get_inputs()]
        self.io_binding = "CUDAExecutionProvider" in session.get_providers()
        object.__setattr__(self, "_replaces", replaces)
        first = next(replaces.parameters(), None) if replaces is not None else None
        like = first if first is not None else torch.empty(0)
        # an empty parameter: callers that read next(module.parameters()) for the dtype and
        # device of their inputs keep working, and it follows .to()
        self.placement = torch.nn.Parameter(like.new_empty(0), requires_grad=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            replaces = self.__dict__.get("_replaces")
            if replaces is None or name.startswith("_"):
                raise
            return getattr(replaces, name)

    def __deepcopy__(self, memo: dict) -> OrtModule:
        return self  # a session is shared, never copied

    def forward(self, *args: torch.Tensor | None) -> torch.Tensor | tuple[torch.Tensor, ...]:
        args = tuple(a for a in args if a is not None)  # the exporter drops None inputs too
        if len(args) != len(self.input_names):
            raise TypeError(f"ONNX model takes {self.input_names}, got {len(args)} inputs")
        floats = [a.dtype for a in args if a.is_floating_point()]
        out_dtype = floats[0] if floats else torch.float32
        device = args[0].device
        if self.io_binding and device.type == "cuda":
            outs = self._run_bound(args, device)
        else:
            feed = {
                n: a.detach().cpu().numpy().astype(d, copy=False)
                for n, a, d in zip(self.input_names, args, self.input_dtypes)
            }
            outs = self.session.run(self.output_names, feed)
        tensors = [_to_torch(o, out_dtype, device) for o in outs]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    def _run_bound(self, args: tuple[torch.Tensor, ...], device: torch.device) -> list:
        """CUDA EP: bind the inputs where they are (no host copy)."""
        binding = self.session.io_binding()
        index = device.index or 0
        kept = []
        for name, a, d in zip(self.input_names, args, self.input_dtypes):
            a = a.detach().to(_torch_dtype(d)).contiguous()
            kept.append(a)
            binding.bind_input(name, "cuda", index, d, tuple(a.shape), a.data_ptr())
        for name in self.output_names:
            binding.bind_output(name, "cuda", index)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


def _np_dtype(onnx_type: str) -> np.dtype:
    names = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(bool)": np.bool_,
    }
    return np.dtype(names.get(onnx_type, np.float32))


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(1, dtype=dtype)).dtype


def _to_torch(array: np.ndarray, float_dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(array))
    if t.is_floating_point():
        t = t.to(float_dtype)
    return t.to(device)


def _references(obj: Any, depth: int = 4) -> list[Any]:
    """Objects reachable from ``obj`` through attributes, containers and bound methods."""
    found, seen, frontier = [], {id(obj)}, [obj]
    for _ in range(depth):
        nxt = []
        for o in frontier:
            if isinstance(o, torch.Tensor):
                continue
            if isinstance(o, dict):
                children = list(o.values())
            elif isinstance(o, (list, tuple)):
                children = list(o)
            elif hasattr(o, "__self__") and hasattr(o, "__func__"):
                children = [o.__self__]
            elif hasattr(o, "__dict__"):
                children = list(vars(o).values())
            else:
                children = []
            for c in children:
                if id(c) not in seen:
                    seen.add(id(c))
                    found.append(c)
                    nxt.append(c)
        frontier = nxt
    return found


def _decode_method(ort_module: OrtModule) -> Callable:
    def decode(latent: Latent) -> Image:
        with torch.no_grad():
            return Image(ort_module(latent.samples).float())

    return decode


def _encode_method(ort_module: OrtModule) -> Callable:
    def encode(image: Image, *, sample: bool = False, generator=None) -> Latent:
        with torch.no_grad():
            mean, std = ort_module(image.pixels)
        if not sample:
            return Latent(mean)
        noise = torch.randn(
            mean.shape,
            generator=generator,
            dtype=mean.dtype,
            device=generator.device if generator is not None else mean.device,
        ).to(mean.device)
        return Latent(mean + std * noise)

    return encode


ROLE_METHODS = {
    "vae_decoder": ("decode", _decode_method),
    "vae_encoder": ("encode", _encode_method),
}
"""Exported modules that stand for a component method (:mod:`t2i_ldm.export`'s boundaries:
``vae_decoder`` is ``decode(Latent) -> Image``, ``vae_encoder`` the scaled posterior's mean
and std of ``encode(Image)``)."""


def swap_in_sessions(component: Any, models: dict[str, Any], sessions: dict[str, Any]):
    """A copy of ``component`` with the ONNX sessions of ``models`` (name -> manifest entry)
    in place of its exported modules; returns ``(copy, names left in torch)``."""
    spec = {m.name: m for m in component.export_spec()}
    reachable = {id(o) for o in _references(component)}
    memo: dict[int, Any] = {}
    methods: dict[str, Callable] = {}
    fallback: list[str] = []
    for name, entry in models.items():
        m = spec.get(entry["module"])
        if m is None:
            raise OnnxExportError(
                f"model {name!r} of the export is module {entry['module']!r}, which component "
                f"{entry['component']!r} does not have ({', '.join(spec)}): export again"
            )
        ort_module = OrtModule(sessions[name], replaces=m.module)
        if id(m.module) in reachable or m.module is component:
            memo[id(m.module)] = ort_module
        elif entry["module"] in ROLE_METHODS:
            method, make = ROLE_METHODS[entry["module"]]
            methods[method] = make(ort_module)
        else:
            fallback.append(name)
    for o in [component, *_references(component)]:  # share weights; copy only the structure
        if isinstance(o, torch.nn.Module):
            for t in (*o.parameters(), *o.buffers()):
                memo.setdefault(id(t), t)
        elif isinstance(o, torch.Tensor):
            memo.setdefault(id(o), o)
    if id(component) in memo:
        return memo[id(component)], fallback
    new = copy.deepcopy(component, memo)
    for method, fn in methods.items():
        object.__setattr__(new, method, fn)
    return new, fallback


DEPLOYED_OPTION = "deployed"
"""Recipe factory keyword the runtime fills with :func:`deployed_info` when the factory takes it."""


def deployed_info(folder: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What a recipe factory gets as ``deployed=``: ``runtime``, ``dir`` (the export folder),
    ``provided`` (loader nodes whose component a deployment rebuilds, so their loaders never
    run), ``graph`` (the exported txt2img graph's JSON, its ``meta`` with the defaults and the
    model hash) and ``tokenizers`` (tokenizer node -> the folder its files were saved in)."""
    folder = Path(folder).resolve()
    tokenizers = {}
    for node, entry in manifest.get("tokenizers", {}).items():
        files = entry.get("files") or []
        if files:
            tokenizers[node] = str(folder / Path(files[0]).parts[0])
    components = manifest.get("components", {})
    return {
        "runtime": "onnx",
        "dir": str(folder),
        "provided": sorted(n for n, c in components.items() if c.get("deployment")),
        "graph": manifest["graph"],
        "tokenizers": tokenizers,
    }


def _factory_takes(manager: Any, recipe: str, keyword: str) -> bool:
    """Whether recipe ``recipe``'s factory, as registered in ``manager``, has parameter
    ``keyword``."""
    try:
        factory = manager.registry.get("recipe", recipe).factory
        return keyword in inspect.signature(factory).parameters
    except Exception:  # an unknown recipe: Engine.build reports it
        return False


def _canonical(manager: Any, recipe: str) -> str:
    """The registered name of recipe ``recipe`` (an alias resolved); unknown: as given."""
    try:
        return manager.registry.get("recipe", recipe).name
    except Exception:  # an unknown recipe: Engine.build reports it
        return recipe


class OnnxRuntime:
    """The ``onnx`` runtime of :meth:`t2i.engine.Engine.build` (entry point ``t2i.runtimes``).
    Options: ``dir`` (the export folder), ``provider`` (an execution provider name),
    ``threads`` (ORT intra-op threads)."""

    def recipe(
        self,
        recipe: str | None,
        dir: str | Path | None = None,
        plugins: Any = None,
        **_: Any,
    ):
        """The recipe and options the export at ``dir`` was made from. ``recipe`` (a name or
        an alias) must be that recipe; ``plugins``: the build's plugin manager (default the
        process-wide one), in which names and the factory's keywords are looked up."""
        from t2i.plugins import get_plugin_manager

        if dir is None:
            raise OnnxExportError("runtime onnx needs the export folder: onnx_dir=DIR (--onnx-dir)")
        manager = plugins or get_plugin_manager()
        manifest = read_manifest(dir)
        name = _canonical(manager, manifest["recipe"]["name"])
        if recipe is not None:
            asked = manager.registry.get("recipe", recipe).name  # unknown: UnknownComponentError
            if asked != name:
                alias = f" (recipe {asked!r})" if asked != recipe else ""
                raise OnnxExportError(
                    f"{dir} is an export of recipe {name!r}, not {recipe!r}{alias}: leave "
                    f"--recipe out or export {recipe!r}"
                )
        options = dict(manifest["recipe"]["options"])
        if _factory_takes(manager, name, DEPLOYED_OPTION):
            options[DEPLOYED_OPTION] = deployed_info(dir, manifest)
        return name, options

    def apply(
        self, pipe: Any, dir: str | Path, provider: str | None = None, threads: int | None = None
    ) -> None:
        """Load the sessions (``threads``: intra-op threads, default ORT's) and swap them into
        ``pipe``'s components."""
        import onnxruntime as ort

        manifest = read_manifest(dir)
        session_options = ort.SessionOptions()
        if threads:
            session_options.intra_op_num_threads = int(threads)
        providers = providers_for(pipe.device, provider)
        options = []
        if providers[0] == "CUDAExecutionProvider":
            options = [{"device_id": pipe.device.index or 0}, {}]
        sessions = {}
        for name, entry in manifest["models"].items():
            path = str(Path(dir) / entry["file"])
            sessions[name] = ort.InferenceSession(
                path, session_options, providers=providers, provider_options=options or None
            )
        by_node: dict[str, dict[str, Any]] = {}
        for name, entry in manifest["models"].items():
            by_node.setdefault(entry["node"], {})[name] = entry
        deployed = deploy_components(pipe, manifest.get("components", {}), sessions)
        for node in deployed:
            by_node.pop(node, None)
        fallback: list[str] = []
        torch_built: list[str] = []

        def replace(node_id: str, kind: str, component: Any) -> Any:
            models = by_node.pop(node_id, None)
            if not models:
                return component
            torch_built.append(node_id)
            new, left = swap_in_sessions(component, models, sessions)
            fallback.extend(left)
            return new

        if by_node:  # components without a deployment: built in torch, modules swapped
            pipe.map_components(replace)
        if by_node:
            raise OnnxExportError(
                f"{dir}: models {sorted(n for m in by_node.values() for n in m)} belong to graph "
                f"nodes {sorted(by_node)} that recipe {pipe.recipe.name!r} does not load: export "
                "again"
            )
        if fallback:
            log.warning("onnx_torch_fallback", models=fallback)
        pipe.onnx_torch_fallback = fallback
        pipe.onnx_deployed = deployed
        pipe.onnx_torch_built = torch_built
        pipe.onnx_providers = providers


def deploy_components(pipe: Any, components: dict[str, Any], sessions: dict[str, Any]) -> list:
    """Put, in place of every loader node whose manifest entry names a deployment, the
    component its factory builds around :class:`OrtModule` s, without running the loader
    (so the family's torch model code is never imported); returns those node ids."""
    from t2i.registry.lazy import lazy

    def provide(node_id: str, kind: str, params: dict) -> Any:
        entry = components.get(node_id)
        if not entry or not entry.get("deployment"):
            return None
        deployment = entry["deployment"]
        modules = {m: OrtModule(sessions[name]) for m, name in entry["models"].items()}
        try:
            factory = lazy(deployment["factory"]).resolve()
        except (ImportError, AttributeError) as exc:
            raise OnnxExportError(
                f"component {entry['component']!r} of node {node_id!r} is deployed by "
                f"{deployment['factory']}, which does not import here ({exc}): install the "
                "family plugin it came from"
            ) from exc
        return factory(modules, **deployment.get("options", {}))

    return pipe.provide_components(provide)


RUNTIME = OnnxRuntime()
