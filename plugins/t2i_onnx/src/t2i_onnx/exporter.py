"""Export every module of a recipe to ONNX (``t2i export onnx``), family-agnostic.

The recipe is built with :meth:`t2i.engine.Engine.build`; every component its graphs load
that is :class:`~t2i.contracts.Exportable` names its modules (example inputs, input/output
names, dynamic axes), and each goes to ``DIR/<name>/model.onnx`` (Optimum's layout;
``<node>_<name>`` where two components name the same module). The TorchScript exporter
(``torch.onnx.export(dynamo=False)``) traces each module on its example inputs; a model over
2 GB keeps its weights in ``model.onnx.data`` beside it (ONNX external data). The folder is
written as a temporary sibling and renamed into place, so a failed export leaves an existing
folder as it was.

``fp16``: the module is cast to float16 and traced on float16 inputs. The TorchScript
exporter's ``scaled_dot_product_attention`` builds a causal or boolean mask in float32 and
upcasts the scores to add it, so the rest of the graph turns float32 and ONNX Runtime refuses
the model (LayerNormalization on mixed types); while exporting fp16,
:func:`half_safe_attention` computes those attentions in the query's dtype instead.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from t2i_onnx.manifest import FORMAT, FORMAT_VERSION, OnnxExportError, model_file, write_manifest

DEFAULT_OPSET = 17
"""Opset of the exported graphs (Trilu and SDPA need >= 14; Optimum's base config uses 18)."""
EXTERNAL_DATA_BYTES = 2 * 1024**3 - 64 * 1024**2
"""A model whose serialised size reaches this keeps its weights in external data (protobuf's
2 GB limit, minus a margin for the graph itself)."""
ORT_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
"""Operator domains ONNX Runtime implements: a node of any other domain is a custom op."""
REQUEST_DEFAULT_KEYS = ("sampler", "schedule", "steps", "cfg_scale", "guidance", "width", "height")


@attrs.frozen
class ExportedModel:
    """One written model: its manifest entry."""

    name: str
    entry: dict[str, Any]


@attrs.frozen
class LoadedComponent:
    """A component the recipe's graph loads: its loader node, kind and registered name."""

    node: str
    kind: str
    name: str
    component: Any


def loaded_components(pipe: Any) -> list[LoadedComponent]:
    """Every component the pipeline's graphs load (each once)."""
    found: list[LoadedComponent] = []
    seen: set[int] = set()
    graphs = [g for g in (pipe.recipe.graph, pipe.recipe.img2img_graph) if g is not None]

    def collect(node_id: str, kind: str, component: Any) -> Any:
        if id(component) not in seen:
            seen.add(id(component))
            name = next(g[node_id].params.get("name", "") for g in graphs if node_id in g)
            found.append(LoadedComponent(node_id, kind, name, component))
        return component

    pipe.map_components(collect)
    return found


def export_recipe(
    recipe: str,
    out: str | Path,
    *,
    options: Mapping[str, Any] | None = None,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    external_data_bytes: int = EXTERNAL_DATA_BYTES,
    plugins: Any = None,
) -> dict[str, Any]:
    """Export recipe ``recipe`` (built with ``options``) to folder ``out``; returns the
    manifest. Raises :class:`OnnxExportError` for bad input before any model work."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OnnxExportError(f"{out} exists; pass --overwrite to replace it, or another --out")
    if out.exists() and not out.is_dir():
        raise OnnxExportError(f"{out} is a file, not an export folder; choose another --out")
    if not 14 <= opset <= 23:
        raise OnnxExportError(f"--opset {opset}: choose an opset between 14 and 23 (default 17)")
    say = progress or (lambda message: None)
    from t2i.engine import Engine

    options = dict(options or {})
    pipe = Engine.build(recipe, plugins=plugins, **options)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _write_export(pipe, tmp, options, fp16, opset, external_data_bytes, say)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"wrote {out}")
    return manifest


def _write_export(pipe, folder: Path, options, fp16, opset, external_bytes, say) -> dict:
    components = loaded_components(pipe)
    specs = [(c, c.component.export_spec()) for c in components if _exportable(c.component)]
    if not specs:
        raise OnnxExportError(
            f"recipe {pipe.recipe.name!r} loads no component with an export_spec(): nothing to "
            "export (its family plugin must describe its modules, t2i.contracts.ExportSpec)"
        )
    counts: dict[str, int] = {}
    for _, spec in specs:
        for m in spec:
            counts[m.name] = counts.get(m.name, 0) + 1
    models: dict[str, Any] = {}
    deployed: dict[str, Any] = {}
    total = sum(len(spec.modules) for _, spec in specs)
    for comp, spec in specs:
        deployed[comp.node] = _deployment_entry(comp, spec, counts)
        for m in spec:
            name = m.name if counts[m.name] == 1 else f"{comp.node}_{m.name}"
            say(f"[{len(models) + 1}/{total}] exporting {name} ({comp.kind} {comp.name!r})")
            entry = export_module(m, folder / name, fp16=fp16, opset=opset, external=external_bytes)
            fixed = _fixed_batch_inputs(m)
            if fixed:
                say(
                    f"  warning: {name}: inputs {fixed} have a fixed batch axis while others have "
                    "a dynamic one (the export spec names no axis 0 for them): other batch "
                    "sizes will fail in ONNX Runtime"
                )
                entry["fixed_batch_inputs"] = fixed
            models[name] = {
                "file": model_file(name),
                "node": comp.node,
                "kind": comp.kind,
                "component": comp.name,
                "module": m.name,
                **entry,
            }
    not_exported = [
        {"node": c.node, "kind": c.kind, "component": c.name}
        for c in components
        if not _exportable(c.component)
    ]
    manifest = (pipe, folder, options, models, not_exported, fp16, opset, components)
    return _finish_manifest(*manifest, deployed)


def _deployment_entry(comp: LoadedComponent, spec: Any, counts: dict[str, int]) -> dict:
    """The manifest's ``components`` entry of a component: its models by module name and how
    a runtime rebuilds it around them (``deployment``: None means it is built in torch and
    its modules swapped)."""
    names = {m.name: m.name if counts[m.name] == 1 else f"{comp.node}_{m.name}" for m in spec}
    d = spec.deployment
    return {
        "kind": comp.kind,
        "component": comp.name,
        "models": names,
        "deployment": None if d is None else {"factory": d.factory, "options": dict(d.options)},
    }


def _fixed_batch_inputs(m: Any) -> list[str]:
    """Inputs whose axis 0 is fixed when some other input's axis 0 is dynamic."""
    dynamic = [n for n in m.input_names if 0 in m.dynamic_axes.get(n, {})]
    if not dynamic:
        return []
    return [
        n
        for n, x in zip(m.input_names, m.example_inputs)
        if n not in dynamic and x.ndim > 0 and 0 not in m.dynamic_axes.get(n, {})
    ]


def _exportable(component: Any) -> bool:
    return callable(getattr(component, "export_spec", None))


def _finish_manifest(
    pipe, folder, options, models, not_exported, fp16, opset, components, deployed=None
):
    from t2i.version import __version__

    recipe = pipe.recipe
    defaults = {k: v for k, v in pipe.defaults.items() if _jsonable(v)}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "t2i_version": __version__,
        "recipe": {"name": recipe.name, "options": {k: _json_value(v) for k, v in options.items()}},
        "opset": opset,
        "fp16": fp16,
        "models": models,
        "components": deployed or {},
        "not_exported": not_exported,
        "tokenizers": _save_tokenizers(components, folder),
        "graph": recipe.graph_dict(),
        "img2img_graph": recipe.graph_dict(img2img=True) if recipe.img2img_graph else None,
        "defaults": defaults,
        "sampler_defaults": {k: defaults[k] for k in REQUEST_DEFAULT_KEYS if k in defaults},
    }
    write_manifest(folder, manifest)
    return manifest


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def _json_value(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return str(Path(value).resolve())
    return value if _jsonable(value) else str(value)


def _save_tokenizers(components: list[LoadedComponent], folder: Path) -> dict[str, Any]:
    """Copy each tokenizer's files (Hugging Face ``save_pretrained``) into ``tokenizer/``;
    a tokenizer without files (rule-based) is named only."""
    saved: dict[str, Any] = {}
    for c in components:
        if c.kind != "tokenizer":
            continue
        target = folder / ("tokenizer" if not saved else f"tokenizer_{c.node}")
        files: list[str] = []
        for obj in (c.component, *vars_of(c.component)):
            if callable(getattr(obj, "save_pretrained", None)):
                obj.save_pretrained(str(target))
                files = sorted(str(p.relative_to(folder)) for p in target.rglob("*") if p.is_file())
                break
        saved[c.node] = {"component": c.name, "files": files}
    return saved


def vars_of(obj: Any) -> list[Any]:
    return list(vars(obj).values()) if hasattr(obj, "__dict__") else []


def export_module(m: Any, folder: Path, *, fp16: bool, opset: int, external: int) -> dict:
    """Write ExportedModule ``m`` to ``folder/model.onnx``; returns its manifest entry."""
    import onnx
    import torch

    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    module, inputs = m.module, m.example_inputs
    if fp16:
        module = copy.deepcopy(module).half()
        inputs = tuple(x.half() if x.is_floating_point() else x for x in inputs)
    half = half_safe_attention() if fp16 else contextlib.nullcontext()
    with warnings.catch_warnings(), half:
        warnings.simplefilter("ignore")  # TracerWarnings, the legacy exporter's deprecation
        torch.onnx.export(
            module,
            inputs,
            str(path),
            dynamo=False,
            input_names=list(m.input_names),
            output_names=list(m.output_names),
            dynamic_axes={k: dict(v) for k, v in m.dynamic_axes.items()},
            opset_version=opset,
        )
    model = onnx.load(str(path))
    data = sum(p.stat().st_size for p in folder.iterdir())
    external_data = data >= external or len(list(folder.iterdir())) > 1
    if external_data:  # one weights file beside the graph (the exporter may write many)
        for p in list(folder.iterdir()):
            p.unlink()
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="model.onnx.data",
            size_threshold=0,
        )
    onnx.checker.check_model(str(path))
    custom = sorted({n.domain for n in model.graph.node if n.domain not in ORT_DOMAINS})
    if custom:
        raise OnnxExportError(
            f"{m.name}: the exported graph has nodes of custom op domains {custom} that ONNX "
            "Runtime cannot run; export the torch fallback of those kernels"
        )
    return {
        "inputs": [_value_info(v) for v in model.graph.input],
        "outputs": [_value_info(v) for v in model.graph.output],
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in m.dynamic_axes.items()},
        "external_data": external_data,
        "fp16": fp16,
    }


@contextlib.contextmanager
def half_safe_attention() -> Iterator[None]:
    """Within: ``F.scaled_dot_product_attention`` with ``is_causal`` or a boolean mask runs as
    plain ops in the query's dtype (softmax of the masked scaled scores; a row with every key
    masked gives zeros, as the exporter's own graph does), so a float16 trace stays float16."""
    import torch
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        boolean = attn_mask is not None and attn_mask.dtype == torch.bool
        if kw or dropout_p or not (is_causal or boolean):
            return original(q, k, v, attn_mask, dropout_p, is_causal, scale=scale, **kw)
        if is_causal:
            length, keys = q.shape[-2], k.shape[-2]
            attn_mask = torch.ones(length, keys, dtype=torch.bool, device=q.device).tril()
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        scores = (q * scale) @ k.transpose(-2, -1)
        scores = scores.masked_fill(~attn_mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)
        return weights @ v

    F.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _value_info(value: Any) -> dict[str, Any]:
    import onnx

    t = value.type.tensor_type
    shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
    return {
        "name": value.name,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
        "shape": shape,
    }


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed only
    once the new folder is in place."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
