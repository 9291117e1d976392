"""Adapting a loaded component: LoRA files and fine-tuned weights, for any family.

The family-agnostic fine-tuning hook. A component (denoiser, text encoder ...) may define

- ``trainable_modules() -> {name: nn.Module}``: the modules fine-tuning updates, by name.
  Default: its export spec's modules (:class:`~t2i.contracts.Exportable`), or the component
  itself when it is an ``nn.Module`` (name ``""``).
- ``lora_modules() -> {name: nn.Linear | nn.Conv2d}``: the layers a LoRA may adapt, by the
  names the family's LoRA files use (an SD UNet answers diffusers' names,
  ``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``). Default: every Linear
  and Conv2d of :func:`trainable_modules`, by its path there.

A LoRA (Hu et al. 2021, arXiv 2106.09685) adds ``scale * alpha / rank * up @ down`` to a
layer's weight. Two file layouts are read (:func:`read_lora`):

- kohya / A1111: ``lora_unet_<path with _>.lora_down.weight``, ``.lora_up.weight``,
  ``.alpha``; ``lora_te_`` (``lora_te1_``) for the text encoder;
- diffusers / peft: ``unet.<path>.lora_A.weight``, ``.lora_B.weight`` (optional ``.alpha``;
  none means ``alpha = rank``), ``text_encoder.<path>...``; older diffusers
  ``<path>.lora.down.weight`` / ``.lora.up.weight`` too.

:func:`adapt_component` (what the ``Load*`` nodes call) copies a component before merging,
so a cached base model shared by other pipelines is never changed.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from t2i.checkpoints import CheckpointError, load_into, open_checkpoint

ROLES = {"denoiser": "unet", "text_encoder": "text_encoder"}
"""Component kind -> the prefix of its keys in a diffusers-layout LoRA file."""
_KOHYA = {"unet": ("lora_unet_",), "text_encoder": ("lora_te_", "lora_te1_")}
_PEFT_SUFFIXES = (
    (".lora_A.weight", ".lora_B.weight"),
    (".lora.down.weight", ".lora.up.weight"),
    (".lora_down.weight", ".lora_up.weight"),
)


@attrs.frozen
class LoraLayer:
    """One adapted layer of a LoRA file: ``down (r, in[, k, k])``, ``up (out, r[, 1, 1])``."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self, shape: torch.Size, scale: float) -> torch.Tensor:
        """``scale * alpha / rank * up @ down`` shaped as the layer's weight ``shape``."""
        alpha = self.rank if self.alpha is None else self.alpha
        up, down = self.up.flatten(1).double(), self.down.flatten(1).double()
        return (up @ down * (scale * alpha / self.rank)).reshape(shape)


def trainable_modules(component: Any) -> dict[str, nn.Module]:
    """The modules fine-tuning updates (module docstring), by name."""
    own = getattr(component, "trainable_modules", None)
    if callable(own):
        return dict(own())
    spec = getattr(component, "export_spec", None)
    if callable(spec):
        return {m.name: m.module for m in spec().modules}
    if isinstance(component, nn.Module):
        return {"": component}
    raise TypeError(
        f"{type(component).__name__} holds no nn.Module: give it trainable_modules() "
        "(t2i.lora) to fine-tune it or load LoRA files into it"
    )


def lora_modules(component: Any) -> dict[str, nn.Module]:
    """The layers a LoRA may adapt, by the names the family's LoRA files use."""
    own = getattr(component, "lora_modules", None)
    if callable(own):
        return dict(own())
    modules = trainable_modules(component)
    out: dict[str, nn.Module] = {}
    for prefix, module in modules.items():
        for path, layer in module.named_modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                name = ".".join(p for p in (prefix if len(modules) > 1 else "", path) if p)
                out.setdefault(name, layer)
    return out


def _peft_layers(keys: Iterable[str], prefix: str) -> dict[str, tuple[str, str]]:
    out = {}
    for key in keys:
        if not key.startswith(prefix):
            continue
        for down, up in _PEFT_SUFFIXES:
            if key.endswith(down):
                name = key[len(prefix) : -len(down)]
                out[name] = (key, key[: -len(down)] + up)
    return out


def read_lora(path: str | os.PathLike) -> dict[str, dict[str, LoraLayer]]:
    """A LoRA file -> ``{"unet" | "text_encoder": {name: LoraLayer}}``.

    kohya names keep their underscores (``down_blocks_0_attentions_0...``): they are matched
    against a component's names with dots turned into underscores (:func:`merge_lora`).

    Raises:
        CheckpointError: not a LoRA file, a layer without its other half, or a rank
            mismatch between a layer's down and up weights.
    """
    reader = open_checkpoint(path)
    keys = list(reader.keys())
    out: dict[str, dict[str, LoraLayer]] = {}
    used: set[str] = set()
    pairs: list[tuple[str, str, tuple[str, str]]] = []
    for role, prefixes in _KOHYA.items():
        for prefix in prefixes:
            for name, keys_ in _peft_layers(keys, prefix).items():
                pairs.append((role, "kohya:" + name, keys_))
    for role in ROLES.values():
        for name, keys_ in _peft_layers(keys, role + ".").items():
            pairs.append((role, name, keys_))
    if not pairs:
        raise CheckpointError(
            "not a LoRA file: no lora_down/lora_up (kohya) or lora_A/lora_B (diffusers/peft) "
            "keys under lora_unet_, lora_te_, unet. or text_encoder.",
            path=path,
            unexpected=keys[:20],
            fix="pass a LoRA .safetensors (kohya/A1111 or diffusers layout)",
        )
    for role, name, (down_key, up_key) in pairs:
        if up_key not in reader:
            raise CheckpointError(
                f"LoRA layer {name} has {down_key} but no {up_key}", path=path, missing=[up_key]
            )
        down, up = reader.get(down_key), reader.get(up_key)
        if down.shape[0] != up.shape[1]:
            raise CheckpointError(
                f"rank mismatch in LoRA layer {name}: down has rank {down.shape[0]}, "
                f"up has rank {up.shape[1]}",
                path=path,
                mismatched=[(up_key, tuple(up.shape), (up.shape[0], down.shape[0]))],
                fix="the file is damaged or mixes two LoRAs; re-export it",
            )
        stem = down_key.rsplit(".lora", 1)[0]
        alpha_key = stem + ".alpha"
        alpha = float(reader.get(alpha_key)) if alpha_key in reader else None
        used.update({down_key, up_key, alpha_key})
        out.setdefault(role, {})[name] = LoraLayer(down.float(), up.float(), alpha)
    return out


def _resolve(name: str, modules: Mapping[str, nn.Module]) -> nn.Module | None:
    if name.startswith("kohya:"):
        return _kohya_names(modules).get(name[len("kohya:") :])
    return modules.get(name)


def _kohya_names(modules: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    return {n.replace(".", "_"): m for n, m in modules.items()}


def merge_lora(
    component: Any,
    layers: Mapping[str, LoraLayer],
    scale: float,
    *,
    path: str | os.PathLike | None = None,
    what: str = "component",
) -> int:
    """Add each layer's delta into ``component``'s weights in place; returns layers merged.

    Raises:
        CheckpointError: a layer name the component does not have (the LoRA was made for
            another architecture; the unmatched names are listed) or a shape that does not
            fit the layer.
    """
    modules = lora_modules(component)
    targets, unmatched, misfit = [], [], []
    for name, layer in layers.items():
        module = _resolve(name, modules)
        if module is None:
            unmatched.append(name.removeprefix("kohya:"))
            continue
        weight = module.weight
        out_in = (weight.shape[0], weight[0].numel())
        if (layer.up.shape[0], layer.down[0].numel()) != out_in:
            shape = (layer.up.shape[0], layer.down[0].numel())
            misfit.append((name.removeprefix("kohya:"), shape, out_in))
            continue
        targets.append((module, layer))
    if unmatched or misfit:
        raise CheckpointError(
            f"LoRA does not fit {what}: {len(unmatched)} of {len(layers)} layers name no layer "
            f"of it, {len(misfit)} have other sizes; it was made for another architecture",
            path=path,
            unexpected=unmatched,
            mismatched=misfit,
            fix=f"use a LoRA trained for this model; {what} has layers such as "
            + ", ".join(sorted(modules)[:3]),
        )
    with torch.no_grad():
        for module, layer in targets:
            delta = layer.delta(module.weight.shape, scale)
            module.weight.add_(delta.to(module.weight.device, module.weight.dtype))
    return len(targets)


def parse_loras(value: Any, scale: float = 1.0) -> tuple[tuple[str, float], ...]:
    """``lora=`` of :meth:`Engine.build`: a path, or a list of paths / ``(path, scale)``."""
    if value is None or value == ():
        return ()
    items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    out = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            out.append((str(item), float(scale)))
        elif (
            isinstance(item, Sequence)
            and len(item) == 2
            and isinstance(item[0], (str, os.PathLike))
            and isinstance(item[1], (int, float))
        ):
            out.append((str(item[0]), float(item[1])))
        else:
            raise ValueError(
                f"lora= takes a path or a list of paths / (path, scale) pairs, got {item!r}"
            )
    return tuple(out)


def check_lora_paths(loras: Iterable[tuple[str, float]]) -> None:
    """Every LoRA file exists and parses as a LoRA (CheckpointError otherwise)."""
    for path, _scale in loras:
        if not Path(path).is_file():
            raise CheckpointError("no such LoRA file", path=path, fix="check the path")
        read_lora(path)


def adapt_component(
    component: Any,
    kind: str,
    *,
    loras: Iterable[Sequence[Any]] = (),
    weights: str | os.PathLike | None = None,
) -> Any:
    """A copy of ``component`` with fine-tuned ``weights`` loaded and ``loras`` merged.

    Args:
        kind: the component kind (``denoiser`` reads a file's ``unet`` part,
            ``text_encoder`` its ``text_encoder`` part).
        loras: ``(path, scale)`` pairs, merged in order.
        weights: a safetensors file of the full state of :func:`trainable_modules`
            (keys ``NAME.param``), as ``t2i dreambooth`` writes for a full fine-tune.
    """
    loras = [(str(p), float(s)) for p, s in loras]
    if not loras and not weights:
        return component
    component = copy.deepcopy(component)
    if weights:
        modules = trainable_modules(component)
        holder = nn.ModuleDict({name or "module": m for name, m in modules.items()})
        load_into(holder, open_checkpoint(weights), what=kind, fix="pass the file t2i wrote")
    role = ROLES.get(kind, kind)
    for path, scale in loras:
        layers = read_lora(path).get(role, {})
        if layers:
            merge_lora(component, layers, scale, path=path, what=f"this {kind}")
    return component


_PROMPT_LORA = re.compile(r"<lora:([^:>]+)(?::([^>:]*))?(?::[^>]*)?>")
"""A1111's ``<lora:NAME:MULT>`` (a second number, the UNet multiplier, is read as MULT)."""


def prompt_loras(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """``prompt`` without its ``<lora:NAME:w>`` tags, and the ``(NAME, w)`` they named.

    Raises:
        ValueError: a multiplier that is not a number.
    """
    found = []
    for match in _PROMPT_LORA.finditer(prompt):
        name, weight = match.group(1).strip(), (match.group(2) or "1").strip()
        weight = weight.split("=", 1)[-1]
        try:
            found.append((name, float(weight)))
        except ValueError:
            raise ValueError(
                f"<lora:{name}:{match.group(2)}>: the multiplier must be a number, "
                "as in <lora:NAME:0.8>"
            ) from None
    return _PROMPT_LORA.sub("", prompt).strip(), found


LORA_DIR_ENV = "T2I_LORA_DIR"
"""Where ``<lora:NAME:w>`` looks for ``NAME.safetensors`` (beside ``lora_dir=``)."""


def find_lora(name: str, folder: str | os.PathLike | None) -> str:
    """``NAME`` of a prompt tag -> its file in ``folder`` (or ``$T2I_LORA_DIR``): the path
    ``folder/NAME.safetensors``, else the one ``NAME.safetensors`` in a subfolder."""
    where = folder or os.environ.get(LORA_DIR_ENV)
    if not where:
        raise ValueError(
            f"<lora:{name}>: no LoRA folder: pass lora_dir= (t2i generate --lora-dir DIR) "
            f"or set {LORA_DIR_ENV}"
        )
    folder = Path(where)
    for suffix in (".safetensors", ""):
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return str(candidate)
    below = sorted(folder.rglob(f"{name}.safetensors")) if folder.is_dir() else []
    if len(below) == 1:  # in a subfolder, as A1111 finds it by its name alone
        return str(below[0])
    if len(below) > 1:
        raise ValueError(
            f"<lora:{name}>: {len(below)} files called {name}.safetensors below {folder}: "
            + ", ".join(str(p.relative_to(folder)) for p in below)
            + "; rename one, or name it by its path (<lora:SUBFOLDER/NAME:w>)"
        )
    known = sorted({p.stem for p in folder.rglob("*.safetensors")}) if folder.is_dir() else []
    raise ValueError(
        f"<lora:{name}>: no {name}.safetensors in {folder}; LoRAs there: "
        + (", ".join(known) or "none")
    )
