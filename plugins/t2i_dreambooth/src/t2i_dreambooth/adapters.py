"""What DreamBooth trains in a component: its full weights, or LoRA adapters through peft.

Layers are chosen by the names :func:`t2i.lora.lora_modules` gives (the names the family's
LoRA files use) and injected with peft (``LoraConfig(r=rank, lora_alpha=rank,
init_lora_weights="gaussian")``, as diffusers' ``train_dreambooth_lora.py``) at their paths
inside the component's modules. The trained adapters are written in the diffusers / peft
layout (``unet.<name>.lora_A.weight`` / ``.lora_B.weight``; ``text_encoder.<name>...``),
which diffusers' ``load_lora_weights`` and :func:`t2i.lora.read_lora` read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import structlog
import torch
from torch import nn

from t2i.lora import ROLES, lora_modules, trainable_modules
from t2i_dreambooth.options import DreamBoothOptionsError

log = structlog.get_logger("t2i_dreambooth")
ADAPTER = "default"


def _matches(name: str, suffixes: Iterable[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


@attrs.define(eq=False)
class TrainedPart:
    """One trained component: its modules by name and, for LoRA, the adapted layers as
    ``public name -> (module name, path inside it)``."""

    kind: str
    modules: dict[str, nn.Module]
    lora_layers: dict[str, tuple[str, str]] = attrs.Factory(dict)

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The adapters in the diffusers / peft layout of the family's names."""
        role, out = ROLES[self.kind], {}
        for public, (root, path) in self.lora_layers.items():
            layer = self.modules[root].get_submodule(path)
            out[f"{role}.{public}.lora_A.weight"] = layer.lora_A[ADAPTER].weight.detach()
            out[f"{role}.{public}.lora_B.weight"] = layer.lora_B[ADAPTER].weight.detach()
        return out


def _choose(kind: str, component: Any, suffixes: tuple[str, ...] | None, default) -> dict:
    layers, seen = {}, set()
    for name, module in lora_modules(component).items():  # first name of each layer
        if id(module) not in seen:
            seen.add(id(module))
            layers[name] = module
    chosen = {n: m for n, m in layers.items() if _matches(n, suffixes or default)}
    if not chosen and suffixes is None:
        chosen = {n: m for n, m in layers.items() if isinstance(m, nn.Linear)}
        log.warning("lora_targets_fallback", component=kind, layers=len(chosen))
    if not chosen:
        raise DreamBoothOptionsError(
            f"--lora-targets {list(suffixes or default)} match no layer of the {kind}; "
            f"its layers: {', '.join(sorted(layers)[:6]) or 'none'}"
        )
    return chosen


def prepare(
    kind: str,
    component: Any,
    *,
    lora: bool,
    rank: int,
    targets: tuple[str, ...] | None,
    default_targets: tuple[str, ...],
) -> TrainedPart:
    """Freeze ``component`` and make what trains require grad: every weight (full) or
    peft LoRA adapters injected into the chosen layers (in place)."""
    modules = trainable_modules(component)
    for module in modules.values():
        module.requires_grad_(not lora)
    part = TrainedPart(kind, modules)
    if not lora:
        return part
    from peft import LoraConfig, inject_adapter_in_model

    chosen = _choose(kind, component, targets, default_targets)
    where = {}
    for root, module in modules.items():
        for path, layer in module.named_modules():
            where.setdefault(id(layer), (root, path))
    by_root: dict[str, list[str]] = {}
    for public, layer in chosen.items():
        root, path = where[id(layer)]
        part.lora_layers[public] = (root, path)
        by_root.setdefault(root, []).append(path)
    for root, paths in by_root.items():
        config = LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=paths
        )
        inject_adapter_in_model(config, modules[root], adapter_name=ADAPTER)
        for name, p in modules[root].named_parameters():
            p.requires_grad_("lora_" in name)
    log.info("lora_injected", component=kind, layers=len(chosen), rank=rank)
    return part


def enable_gradient_checkpointing(modules: Iterable[nn.Module]) -> int:
    """Turn on the recomputation the modules offer (a ``gradient_checkpointing`` flag, or
    transformers' ``gradient_checkpointing_enable``); returns how many took it."""
    count = 0
    for module in modules:
        for sub in module.modules():
            enable = getattr(sub, "gradient_checkpointing_enable", None)
            if callable(enable) and getattr(sub, "supports_gradient_checkpointing", False):
                enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                count += 1
            elif isinstance(getattr(sub, "gradient_checkpointing", None), bool):
                sub.gradient_checkpointing = True
                count += 1
    return count
