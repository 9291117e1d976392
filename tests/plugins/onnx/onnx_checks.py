"""Shared checks of the ONNX tests: per-model parity, custom-op domains, image distance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from t2i_onnx.exporter import ORT_DOMAINS, loaded_components

TOY_RECIPES = ("toy-diffusion", "toy-autoregressive", "toy-gan", "toy-cascade")


def example_parity(pipe: Any, folder: Path, tolerance: dict[str, float], default: float):
    """Max abs error of every exported model vs its torch module on the spec's example inputs
    and on inputs with batch 3 (the dynamic axis); returns ``{model: error}``."""
    import json

    import onnxruntime as ort

    manifest = json.loads((folder / "manifest.json").read_text())
    modules = {}
    for c in loaded_components(pipe):
        if callable(getattr(c.component, "export_spec", None)):
            for m in c.component.export_spec():
                modules[(c.node, m.name)] = m
    errors = {}
    for name, entry in manifest["models"].items():
        m = modules[(entry["node"], entry["module"])]
        session = ort.InferenceSession(
            str(folder / entry["file"]), providers=["CPUExecutionProvider"]
        )
        cases = [m.example_inputs]
        if all(0 in m.dynamic_axes.get(n, {}) for n in m.input_names):
            cases.append(tuple(_batch(x, 3) for x in m.example_inputs))
        worst = 0.0
        for inputs in cases:
            with torch.no_grad():
                expected = m.module(*inputs)
            expected = expected if isinstance(expected, tuple) else (expected,)
            feed = {n: x.numpy() for n, x in zip(m.input_names, inputs)}
            got = session.run(None, feed)
            for g, e in zip(got, expected, strict=True):
                assert g.shape == tuple(e.shape), (name, g.shape, e.shape)
                worst = max(worst, float(np.abs(g - e.float().numpy()).max()))
        errors[name] = worst
        assert worst <= tolerance.get(entry["module"], default), (name, worst)
    return errors


def _batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` with ``size`` rows: fresh random rows of the same kind (ids: permuted rows)."""
    reps = [x[i % x.shape[0]] for i in range(size)]
    out = torch.stack(reps)
    if out.is_floating_point():
        out = out + 0.1 * torch.randn_like(out)
    return out


def custom_domains(folder: Path) -> set[str]:
    """Operator domains of every node of every model under ``folder`` that ORT lacks."""
    import onnx

    found = set()
    for path in folder.rglob("model.onnx"):
        model = onnx.load(str(path), load_external_data=False)
        graphs = [model.graph]
        while graphs:
            g = graphs.pop()
            for node in g.node:
                if node.domain not in ORT_DOMAINS:
                    found.add(node.domain)
                graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    return found


def pixel_distance(a: list, b: list) -> int:
    """Largest per-pixel difference (0..255) between two lists of PIL images."""
    assert len(a) == len(b)
    return max(
        int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max()) for x, y in zip(a, b)
    )
