"""The ControlNet folder (``--controlnet-dir``): A1111's ControlNet extension over the API.

``/controlnet/model_list`` lists the folder's ControlNets by the extension's names
(``control_v11p_sd15_canny [d14c016b]``: the file or folder name and the weights' short
hash): its ``.safetensors`` files, diffusers ControlNet folders (``config.json`` +
``diffusion_pytorch_model.safetensors``) and, with ``--allow-pickle``, ``.pth`` / ``.pt`` /
``.ckpt`` files. txt2img and img2img take the extension's units,
``alwayson_scripts: {"controlnet": {"args": [unit, ...]}}``; each enabled unit names a
ControlNet (its title, its name without the hash, or its file name) and gives a control
image, a ready map (module ``none``) or a picture for one of the ldm family's preprocessors
(``invert``, ``canny``: :mod:`t2i_ldm.controlnet_preprocess`). The units reach a recipe
that takes ``controlnet=`` (the ldm family's) as that option and its unit request fields
(:func:`t2i_ldm.controlnet_apply.unit_fields`). In img2img a unit without an image steers
with the init image, as the extension does.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from t2i.request import RequestError
from t2i_server.weight_folders import DIFFUSERS_WEIGHTS

CONTROLNET_DIR_ENV = "T2I_CONTROLNET_DIR"
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt")
SCRIPT = "controlnet"
"""The ``alwayson_scripts`` key of the units (matched case-insensitively, as A1111 does)."""
FIELD = f"alwayson_scripts.{SCRIPT}.args"
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
"""The extension's resize modes, in the order of A1111's ints (0, 1, 2)."""
RESIZE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Envelope (Outer Fit)": "Resize and Fill",
}
"""The extension's older names of the resize modes."""
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
"""The extension's control modes, in the order of its ints."""
MODULE_ALIASES = {"invert (from white bg & black line)": "invert"}
"""The extension's UI names of the preprocessors."""
API_VERSION = 2
"""What ``/controlnet/version`` answers (the extension's API version)."""


@attrs.frozen
class ControlNetFile:
    """One ControlNet of the folder: ``name`` (path below the folder, ``/``-separated),
    ``path`` (a file or diffusers folder), ``pickle`` (a file that needs ``allow_pickle``)."""

    name: str
    path: Path
    pickle: bool = False

    @property
    def label(self) -> str:
        """The name part of its title: the file's stem or the folder's name."""
        return self.path.stem if self.path.is_file() else self.path.name

    @property
    def is_ip_adapter(self) -> bool:
        """Whether the file is an IP-Adapter (its keys; a pickle by its name), which the
        extension lists and runs as a ControlNet model."""
        if self.pickle or not self.path.is_file():
            return _ip_named(self.path)
        st = self.path.stat()
        return _ip_adapter_keys(str(self.path), (st.st_mtime_ns, st.st_size))

    @property
    def title(self) -> str:
        """The extension's model name, ``NAME [HASH8]`` (the hash memoised per file)."""
        try:
            from t2i_ldm.controlnet_apply import model_title
        except ImportError:  # no ldm family: the same rule, the weights file's hash
            from t2i.files import short_hash

            file = self.path if self.path.is_file() else self.path / DIFFUSERS_WEIGHTS
            return f"{self.label} [{short_hash(file, 8)}]"
        return model_title(self.path)


IP_MODULES = ("ip-adapter_clip_sd15", "ip-adapter_clip_sdxl", "ip-adapter_clip_h",
              "ip-adapter_clip_g", "ip-adapter-auto", "ip-adapter_clip_sdxl_plus_vith")  # fmt: skip
"""The extension's IP-Adapter preprocessors: all run the adapter's own image encoder."""


def _ip_named(path: Path) -> bool:
    return path.name.lower().replace("_", "-").startswith("ip-adapter")


@functools.lru_cache(maxsize=256)
def _ip_adapter_keys(path: str, stamp: tuple) -> bool:
    """Whether a safetensors file holds an IP-Adapter's projection (its header, read once
    while the file is unchanged: ``stamp``)."""
    if not path.endswith(".safetensors"):
        return False
    try:
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            return "image_proj.proj.weight" in f.keys()
    except Exception:  # unreadable: the ControlNet loader says why
        return False


def controlnet_dir_from(option: str | os.PathLike | None) -> Path | None:
    """``--controlnet-dir`` if given, else ``$T2I_CONTROLNET_DIR``; None when neither is set."""
    value = option if option is not None else os.environ.get(CONTROLNET_DIR_ENV)
    return Path(value).expanduser() if value else None


def scan_controlnets(
    root: str | os.PathLike | None, *, allow_pickle: bool = False
) -> list[ControlNetFile]:
    """The ControlNets below ``root``, sorted by name (pickle files only with
    ``allow_pickle``; without it each is skipped with a log line saying how to let it load)."""
    from t2i_server.weight_folders import scan_weights

    entries = scan_weights(
        root, kind="controlnet", pickle_suffixes=PICKLE_SUFFIXES, allow_pickle=allow_pickle
    )
    return [ControlNetFile(name, path, pickle=pickle) for name, path, pickle in entries]


def find_controlnet(controlnets: list[ControlNetFile], name: str) -> ControlNetFile | None:
    """The ControlNet called ``name``: its title (``NAME [HASH]``), its name without the
    hash, its file name or its path below the folder (case-insensitive); the hash picks
    between files of one name."""
    text = name.strip()
    bare = text.split(" [")[0] if text.endswith("]") else text
    wanted = bare.lower()
    matches = [
        c for c in controlnets if wanted in (c.name.lower(), c.path.name.lower(), c.label.lower())
    ]
    if len(matches) > 1 and bare != text:
        matches = [c for c in matches if c.title == text] or matches
    return matches[0] if matches else None


@attrs.frozen
class ControlUnit:
    """An enabled unit of a request: the ControlNet and ``params``, the
    ``Ldm.ApplyControlNet`` parameters the unit set (``image`` always, a PIL image; the
    others only when sent: the engine's defaults are the extension's)."""

    controlnet: ControlNetFile
    params: dict[str, Any]


UNIT_KEYS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "weight": ("weight", lambda value, field: _number(value, field, 2.0)),
    "guidance_start": ("start", lambda value, field: _number(value, field, 1.0)),
    "guidance_end": ("end", lambda value, field: _number(value, field, 1.0)),
    "resize_mode": ("resize", lambda value, field: resize_mode(value, field)),
    "control_mode": ("mode", lambda value, field: control_mode(value, field)),
    "module": ("module", lambda value, field: module_name(value, field)),
    "threshold_a": ("threshold_a", lambda value, field: _threshold(value, field)),
    "threshold_b": ("threshold_b", lambda value, field: _threshold(value, field)),
}
"""The extension's unit keys -> (``Ldm.ApplyControlNet`` parameter, ``read(value, field)``
checking and converting the value)."""


def modules() -> dict[str, dict[str, Any]]:
    """``/controlnet/module_list``'s ``module_detail``: the ldm family's preprocessors
    (only ``none`` without it; ``canny`` only with OpenCV installed) and their sliders."""
    import importlib.util

    try:
        from t2i_ldm.controlnet_preprocess import CANNY_THRESHOLDS, PREPROCESSORS
    except ImportError:
        return {"none": {"model_free": False, "sliders": []}}
    names = ("Canny Low Threshold", "Canny High Threshold")
    sliders = {
        "canny": [{"name": n, "value": v, "min": 1, "max": 255, "step": 1}
                  for n, v in zip(names, CANNY_THRESHOLDS)],
        "tile_resample": [{"name": "Down Sampling Rate", "value": 1.0, "min": 1.0, "max": 8.0,
                           "step": 0.01}],
    }  # fmt: skip
    usable = [m for m in PREPROCESSORS if m != "canny" or importlib.util.find_spec("cv2")]
    usable += list(IP_MODULES)  # an IP-Adapter model's image encoder
    return {m: {"model_free": False, "sliders": sliders.get(m, [])} for m in usable}


def enabled_units(scripts: Mapping[str, Any] | None) -> list[tuple[int, dict[str, Any]]]:
    """``[(index in args, unit)]`` of the enabled units of ``alwayson_scripts``' ControlNet
    entry (``enabled`` defaults to true); none without the entry.

    Raises:
        RequestError: the entry is not ``{"args": [unit dict, ...]}``.
    """
    entry = next((v for k, v in (scripts or {}).items() if str(k).lower() == SCRIPT), None)
    if entry is None:
        return []
    args = entry.get("args", []) if isinstance(entry, Mapping) else entry
    if not isinstance(args, list):
        raise RequestError(FIELD, f"must be a list of ControlNet units, got {_kind(args)}")
    units = []
    for i, unit in enumerate(args):
        if not isinstance(unit, Mapping):
            raise RequestError(f"{FIELD}[{i}]", f"must be a unit (an object), got {_kind(unit)}")
        enabled = unit.get("enabled", True)
        if not isinstance(enabled, bool):
            raise RequestError(f"{FIELD}[{i}].enabled", f"must be true or false, not {enabled!r}")
        if enabled:
            units.append((i, dict(unit)))
    return units


def parse_unit(
    unit: Mapping[str, Any],
    field: str,
    find: Callable[[Any, str], ControlNetFile],
    init_image: Any = None,
) -> ControlUnit:
    """One enabled unit (the extension's keys) as a :class:`ControlUnit`; ``find(name,
    field)`` resolves its ``model``, ``init_image`` (img2img's) stands in for a missing
    image. ``threshold_a`` / ``_b`` below 0 (the extension's -1) are the module's defaults;
    pixel_perfect, processor_res, low_vram, hr_option are ignored (a preprocessor runs at
    the image's own size).

    Raises:
        RequestError: naming ``field.KEY``: an unknown module, no or an unknown model, an
            unknown control mode, bad numbers, no or a bad image.
    """
    model = unit.get("model")
    if model in (None, "", "None", "none"):
        raise RequestError(f"{field}.model", "name the ControlNet (see /controlnet/model_list)")
    params = {}
    for key, (param, read) in UNIT_KEYS.items():
        if unit.get(key) is not None:
            params[param] = read(unit[key], f"{field}.{key}")
    start, end = params.get("start", 0.0), params.get("end", 1.0)
    if start >= end:
        raise RequestError(f"{field}.guidance_start", f"{start} must be below guidance_end {end}")
    controlnet = find(model, f"{field}.model")
    ip_module = params.get("module") in IP_MODULES
    if controlnet.is_ip_adapter:  # the image prompt: weight is its scale, nothing else counts
        if params.get("module", "none") not in ("none", *IP_MODULES):
            raise RequestError(f"{field}.module", f"{model!r} is an IP-Adapter: use module "
                               f"{IP_MODULES[0]!r} (or none)")  # fmt: skip
        params = {k: v for k, v in params.items() if k == "weight"}
    elif ip_module:
        raise RequestError(f"{field}.module", f"{params['module']!r} is for IP-Adapter models; "
                           f"{model!r} is a ControlNet")  # fmt: skip
    params["image"] = _unit_image(unit, field, init_image)
    return ControlUnit(controlnet, params)


def module_name(value: Any, field: str) -> str:
    """A unit's preprocessor (None or empty: ``none``) as the ldm family names it.

    Raises:
        RequestError: a preprocessor t2i does not have, the available ones listed.
    """
    if value in (None, "", "None"):
        return "none"
    name = MODULE_ALIASES.get(value, value) if isinstance(value, str) else value
    if name in IP_MODULES:
        return name  # the model must be an IP-Adapter: parse_unit checks
    available = list(modules())
    if name == "canny" and name not in available:
        raise RequestError(field, "canny needs OpenCV: pip install opencv-python-headless")
    if name not in available:
        raise RequestError(
            field,
            f"no preprocessor {value!r}; preprocessors: {', '.join(available)}: for another "
            "map (depth, pose, line art ...) send it ready as the image with module 'none'",
        )
    return name


def control_mode(value: Any, field: str) -> str:
    """A control mode by name or int (0, 1, 2) as its name.

    Raises:
        RequestError: no such mode, the choices listed.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 3:
        value = CONTROL_MODES[value]
    if value in CONTROL_MODES:
        return value
    choices = ", ".join(f"{n!r} ({i})" for i, n in enumerate(CONTROL_MODES))
    raise RequestError(field, f"no control mode {value!r}; modes: {choices}")


def resize_mode(value: Any, field: str) -> str:
    """A resize mode by name (or an older alias) or A1111's int (0, 1, 2) as its name.

    Raises:
        RequestError: anything else, the choices listed.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(RESIZE_MODES):
        return RESIZE_MODES[value]
    if isinstance(value, str) and RESIZE_ALIASES.get(value, value) in RESIZE_MODES:
        return RESIZE_ALIASES.get(value, value)
    choices = ", ".join(f"{n!r} ({i})" for i, n in enumerate(RESIZE_MODES))
    raise RequestError(field, f"no resize mode {value!r}; modes: {choices}")


def _number(value: Any, field: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise RequestError(field, f"must be a number in [0, {high}], got {value!r}")
    return float(value)


def _threshold(value: Any, field: str) -> float | None:
    """A preprocessor number; below 0 (the extension's -1): the module's default (None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(field, f"must be a number, got {value!r}")
    return None if value < 0 else float(value)


def _unit_image(unit: Mapping, field: str, init_image: Any) -> Any:
    """The unit's control image (``image``, or the older ``input_image``; a base64 string,
    ``{"image": ..., "mask": ...}`` or ``[image, mask]``), decoded; else ``init_image``."""
    from t2i_server.images import decode_image

    key = "image" if unit.get("image") not in (None, "") else "input_image"
    value = unit.get(key)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, Mapping):
        key, value = f"{key}.image", value.get("image")
    if value in (None, ""):
        if init_image is None:
            raise RequestError(
                f"{field}.image",
                "give the control image (a base64 PNG: a ready map, or a picture for the "
                "unit's module); txt2img has no init image to steer with",
            )
        return init_image
    return decode_image(f"{field}.{key}", value)


def _kind(value: Any) -> str:
    return type(value).__name__
