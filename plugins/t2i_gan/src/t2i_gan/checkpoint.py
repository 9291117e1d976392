"""GAN checkpoints: our model folders, and DF-GAN's released ``.pth`` layout.

- A model folder (what ``t2i train gan`` exports, and the shipped ``gan-shapes``):
  ``model.json`` (``{"family": "gan", "config": GanConfig fields, "training": ...}``) and
  ``netG.safetensors`` (the EMA generator; ``netD.safetensors`` / ``netC.safetensors``
  beside it when exported with the discriminator).
- DF-GAN's files (``tobran/DF-GAN``, ``GALIP``): a torch pickle ``{'model': {'netG': sd,
  'netD': sd, 'netC': sd}, 'optimizers': ...}``, read only with ``allow_pickle=True`` and
  then with ``torch.load(weights_only=True)``. Sizes are read off the tensors; a
  ``module.`` prefix (DataParallel) is dropped. Every key of the three state dicts must fit.

A file or folder of another family fails with a :class:`~t2i.checkpoints.CheckpointError`
that says what it looks like, before any model is built. Word pooling weights
(``word_pool.*``, ``GanConfig.word_queries`` > 0) load only into a config with as many
queries: a folder whose ``model.json`` disagrees with its weights is refused, saying which.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from t2i.checkpoints import CheckpointError, load_into, open_checkpoint
from t2i_gan.models import GanConfig, NetC, NetD, NetG

FAMILY = "gan"
PARTS = ("netG", "netD", "netC")
WORD_POOL = "word_pool."
"""Key prefix of :class:`~t2i_gan.models.WordPooling` in ``netG`` and ``netC``."""
_BUILD = {"netG": NetG, "netD": NetD, "netC": NetC}
_OTHER_FAMILIES = (
    ("model.diffusion_model.", "a Stable Diffusion (ldm) checkpoint"),
    ("down_blocks.", "a diffusers UNet"),
    ("encoder.down.", "a VAE"),
    ("text_model.", "a CLIP text encoder"),
)


@attrs.frozen(eq=False)
class LoadedGan:
    """What a checkpoint held: its config, ``netG`` and, when present, ``netD``/``netC``."""

    config: GanConfig
    netG: NetG
    netD: NetD | None = None
    netC: NetC | None = None
    training: dict[str, Any] = attrs.Factory(dict)


def _strip(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}


def infer_config(netg: Mapping[str, torch.Tensor], netd: Mapping | None = None) -> GanConfig:
    """A :class:`GanConfig` from a DF-GAN ``netG`` state dict's shapes."""
    try:
        fc = netg["fc.weight"]
        blocks = {int(k.split(".")[1]) for k in netg if k.startswith("GBlocks.")}
        fuse_in = netg["GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight"].shape[1]
    except KeyError as exc:
        raise CheckpointError(f"netG lacks DF-GAN's key {exc}", missing=[str(exc)]) from exc
    if any(k.startswith(WORD_POOL) for k in netg):
        raise CheckpointError(
            "netG holds word pooling weights (word_pool.*), whose heads its shapes do not say",
            fix="load its `t2i train gan` model folder (model.json records word_queries and "
            "word_heads), not the bare netG file",
        )
    nf, z_dim = fc.shape[0] // (8 * 16), fc.shape[1]
    return GanConfig(
        nf=nf, z_dim=z_dim, cond_dim=fuse_in - z_dim, image_size=2 ** (len(blocks) + 2)
    )


def _check_words(config: GanConfig, part: str, state: Mapping[str, Any], where: Path) -> None:
    """Refuse word pooling weights for a config of other ``word_queries`` (and vice versa)."""
    if part == "netD":
        return
    queries = state.get(f"{WORD_POOL}queries")
    held = 0 if queries is None else int(queries.shape[0])
    if held == config.word_queries:
        return
    what = f"word pooling weights of {held} queries" if held else "no word pooling weights"
    raise CheckpointError(
        f"{part} holds {what} (word_pool.*), but its config has word_queries={config.word_queries}",
        path=where,
        fix="load it with the config it was trained with (its own model.json; `t2i train gan "
        f"--word-queries {held}` for --init)",
    )


def _load_parts(
    config: GanConfig, states: Mapping[str, Mapping[str, torch.Tensor]], where: Path
) -> dict[str, torch.nn.Module]:
    modules = {}
    for part, state in states.items():
        _check_words(config, part, state, where)
        module = _BUILD[part](config)
        load_into(module, state, dtype=torch.float32, what=f"{part} of {where}")
        modules[part] = module.eval()
    return modules


def _refuse_other_family(keys: list[str], path: Path) -> None:
    for prefix, what in _OTHER_FAMILIES:
        if any(k.startswith(prefix) for k in keys):
            raise CheckpointError(
                f"this is {what}, not a GAN checkpoint",
                path=path,
                fix="use its own recipe (e.g. --recipe ldm); the gan recipe loads `t2i train "
                "gan` folders and DF-GAN .pth files",
            )


def _load_pickle(path: Path, allow_pickle: bool) -> Any:
    if not allow_pickle:
        raise CheckpointError(
            "refusing to load a pickle checkpoint: pickles can run arbitrary code",
            path=path,
            fix="pass allow_pickle=True (--allow-pickle) if you trust the file; it is then "
            "read with torch.load(weights_only=True)",
        )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses code objects; corrupt files raise anything
        raise CheckpointError(
            f"cannot load it with torch.load(weights_only=True): {type(exc).__name__}: {exc}",
            path=path,
        ) from exc


def load_dfgan_file(path: str | os.PathLike, *, allow_pickle: bool = False) -> LoadedGan:
    """DF-GAN's released layout, or a bare ``netG`` safetensors file (see module docs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such file", path=path, fix="check the path")
    if path.suffix == ".safetensors":
        with open_checkpoint(path) as reader:
            state = reader.to_state_dict()
        _refuse_other_family(list(state), path)
        if "fc.weight" not in state:
            raise CheckpointError("not a DF-GAN generator (no fc.weight)", path=path)
        states = {"netG": _strip(state)}
    else:
        obj = _load_pickle(path, allow_pickle)
        model = obj.get("model") if isinstance(obj, Mapping) else None
        if not isinstance(model, Mapping) or "netG" not in model:
            keys = list(obj) if isinstance(obj, Mapping) else []
            _refuse_other_family([str(k) for k in keys], path)
            raise CheckpointError(
                f"not DF-GAN's layout: expected {{'model': {{'netG', 'netD', 'netC'}}}}, found "
                f"top-level keys {keys[:8]}",
                path=path,
            )
        states = {p: _strip(model[p]) for p in PARTS if p in model}
    config = infer_config(states["netG"])
    return LoadedGan(config, **_load_parts(config, states, path))


def read_model_json(folder: Path) -> dict[str, Any]:
    """``model.json`` of a GAN folder; refuses another family's folder naming it."""
    spec_path = folder / "model.json"
    if not spec_path.is_file():
        raise CheckpointError(
            "no model.json", path=folder, fix="point at a folder written by `t2i train gan`"
        )
    spec = json.loads(spec_path.read_text())
    family = spec.get("family", "ldm" if "unet" in spec else None)
    if family != FAMILY:
        raise CheckpointError(
            f"this is a model folder of family {family!r}, not a GAN",
            path=folder,
            fix="use its own recipe (an ldm-shapes folder: --recipe ldm-shapes)",
        )
    return spec


def load_gan(path: str | os.PathLike, *, allow_pickle: bool = False) -> LoadedGan:
    """A GAN model folder or a DF-GAN file -> :class:`LoadedGan` (float32, eval mode)."""
    path = Path(path)
    if not path.is_dir():
        return load_dfgan_file(path, allow_pickle=allow_pickle)
    spec = read_model_json(path)
    config = GanConfig(**spec["config"])
    states = {}
    for part in PARTS:
        file = path / f"{part}.safetensors"
        if file.is_file():
            with open_checkpoint(file) as reader:
                states[part] = reader.to_state_dict()
    if "netG" not in states:
        raise CheckpointError("the folder has no netG.safetensors", path=path)
    return LoadedGan(config, **_load_parts(config, states, path), training=spec.get("training", {}))
