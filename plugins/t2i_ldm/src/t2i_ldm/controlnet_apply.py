"""A ControlNet steering the sampling: the ``Ldm.ApplyControlNet`` node and the ``ldm``
recipe's ``controlnet`` option.

``Engine.build("ldm", checkpoint=..., controlnet="control_v11p_sd15_canny.safetensors")``
puts an ``Ldm.ApplyControlNet`` between the UNet and each ``Guide`` (txt2img, img2img and the
hires pass); a request gives the control image and A1111's ControlNet-unit settings:

- ``control_image``: an image or a path, a ready control map (edges, depth, pose ...) or a
  picture that ``control_module`` turns into one (A1111's preprocessor: ``none``,
  ``invert``, ``canny`` with ``control_threshold_a`` / ``_b``;
  :mod:`t2i_ldm.controlnet_preprocess`), fitted to each pass's size by ``control_resize``: A1111's
  "Crop and Resize" (default: scale to cover, centre crop), "Just Resize" (stretch, as
  diffusers' ``StableDiffusionControlNetPipeline``) or "Resize and Fill" (scale to fit,
  centred on black);
- ``control_weight`` (A1111's Control Weight, diffusers' ``controlnet_conditioning_scale``):
  the residuals' scale;
- ``control_start`` / ``control_end`` (Guidance Start / End, diffusers'
  ``control_guidance_start`` / ``_end``): the fraction of the pass's steps in which the
  ControlNet runs; step ``i`` of ``n`` is steered unless ``i / n < start`` or ``(i + 1) / n
  > end``, diffusers' rule;
- ``control_mode``: A1111's Control Mode. "Balanced" (default) scales every residual by the
  weight, on every row of the batch, the prompt's and the negative prompt's; "My prompt is
  more important" is the extension's soft injection, residual ``i`` scaled by ``weight *
  0.825 ** (12 - i)`` (SD's 13 residuals, the shallow blocks least; SDXL's 10 take the first
  10 factors, as the extension does); "ControlNet is more important" is soft injection on
  the prompt's rows alone (the negative's get no residuals: ``Conditioning.negative``),
  which for SD is diffusers' ``guess_mode`` (its scales ``10 ** (-1 + i / 12)`` are
  ``0.8254 ** (12 - i)``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from t2i.graph.node import NodeType, Param, Port
from t2i_ldm.controlnet_preprocess import PREPROCESSORS, preprocess

DTYPES = ("float32", "float16", "bfloat16")
RESIZE_MODES = ("Crop and Resize", "Just Resize", "Resize and Fill")
"""A1111 ControlNet's resize modes (its names), the first the default."""
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
"""A1111 ControlNet's control modes."""
SOFT_SCALES = tuple(0.825 ** (12 - i) for i in range(13))
"""The extension's soft-injection factors of SD's 13 residuals (SDXL's 10: the first 10)."""
FIELDS = {
    "control_image": "image",
    "control_weight": "weight",
    "control_start": "start",
    "control_end": "end",
    "control_resize": "resize",
    "control_mode": "mode",
    "control_module": "module",
    "control_threshold_a": "threshold_a",
    "control_threshold_b": "threshold_b",
}
"""Request field -> ``Ldm.ApplyControlNet`` parameter."""
INFOTEXT_FIELDS = {
    "control_module": "ControlNet module",
    "control_weight": "ControlNet weight",
    "control_start": "ControlNet start",
    "control_end": "ControlNet end",
    "control_resize": "ControlNet resize mode",
    "control_mode": "ControlNet control mode",
}
PASSES = (("guide", "sigmas"), ("guide_hr", "sigmas_hr"))
"""The ``Guide`` nodes a ControlNet steers and the sigmas each samples over."""


def fit_control_image(image: Any, width: int, height: int, mode: str) -> torch.Tensor:
    """``(1, 3, height, width)`` float in [0, 1]: the control image fitted by ``mode``
    (:data:`RESIZE_MODES`), Lanczos-resampled as diffusers' image processor does."""
    from PIL import Image as PILImage

    from t2i_ldm.controlnet_preprocess import load_control_image

    image = load_control_image(image)
    w, h = image.size
    if mode == "Just Resize" or (w, h) == (width, height):
        fitted = image.resize((width, height), PILImage.LANCZOS)
    else:
        scale = (max if mode == "Crop and Resize" else min)(width / w, height / h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        scaled = image.resize(size, PILImage.LANCZOS)
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        if mode == "Crop and Resize":
            fitted = scaled.crop((left, top, left + width, top + height))
        else:
            fitted = PILImage.new("RGB", (width, height))
            fitted.paste(scaled, (-left, -top))
    pixels = np.asarray(fitted, dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


class ControlSteering:
    """What the UNet predictor calls each step: ``(x, t, context) -> residuals or None``.

    Args:
        net: the ControlNet (on the sampling device, in the UNet's dtype).
        image: the control image (PIL or path), fitted per pass size and cached.
        weight, start, end, resize, mode: the unit's settings (module docstring).
        step_t: ``(n,)`` the timesteps of the pass's ``n`` steps, descending.
    """

    def __init__(self, net, image, *, weight, start, end, resize, step_t, mode="Balanced"):
        self.net, self.image = net, image
        self.weight, self.start, self.end, self.resize = weight, start, end, resize
        self.soft = mode in CONTROL_MODES[1:]
        self.prompt_rows_only = mode == CONTROL_MODES[2]
        self.step_t = step_t.double().cpu()
        self._hints: dict[tuple, torch.Tensor] = {}

    def scale_at(self, t: torch.Tensor) -> float:
        """The residuals' scale at timestep ``t``: ``weight`` in the steered steps, else 0."""
        from torch._subclasses.fake_tensor import FakeTensor

        n = len(self.step_t)
        if isinstance(t, FakeTensor) or n == 0:  # a memory dry run: measured steered
            return self.weight
        done = int((self.step_t > float(t.reshape(-1)[0]) + 1e-3).sum())  # steps before
        i = min(done, n - 1)
        return 0.0 if i / n < self.start or (i + 1) / n > self.end else self.weight

    def hint(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        key = (height, width, like.device, self.net.dtype)
        if key not in self._hints:
            fitted = fit_control_image(self.image, width, height, self.resize)
            self._hints[key] = fitted.to(like.device, self.net.dtype)
        return self._hints[key]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y=None,
                 negative: torch.Tensor | None = None):  # fmt: skip
        scale = self.scale_at(t)
        if scale == 0:
            return None
        f = self.net.downscale
        hint = self.hint(x.shape[-2] * f, x.shape[-1] * f, x)
        residuals = self.net(x, hint, t, context, y)
        n = len(residuals)
        soft = SOFT_SCALES if n <= len(SOFT_SCALES) else [0.825 ** (n - 1 - i) for i in range(n)]
        scales = [scale * soft[i] if self.soft else scale for i in range(n)]
        residuals = [r if s == 1 else r * s for r, s in zip(residuals, scales)]
        if self.prompt_rows_only and negative is not None:
            keep = (~negative.bool()).to(residuals[0].device, residuals[0].dtype)[
                :, None, None, None
            ]
            residuals = [r * keep for r in residuals]
        return residuals


class ApplyControlNet(NodeType):
    description = (
        "Steer an SD UNet with a ControlNet and a control image (A1111's ControlNet unit): "
        "DENOISER -> the same denoiser adding the ControlNet's residuals in the chosen steps."
    )
    inputs = (
        Port("model", "DENOISER"),
        Port("sigmas", "SIGMAS", description="the pass's sigmas (its steps)"),
    )
    outputs = (Port("model", "DENOISER"),)
    params = (
        Param("controlnet", str, "", "ControlNet file or diffusers folder"),
        Param("image", object, None, "the control image: PIL image or path"),
        Param("weight", float, 1.0, "residual scale (Control Weight)", minimum=0, maximum=2),
        Param("start", float, 0.0, "fraction of steps before it runs", minimum=0.0, maximum=1.0),
        Param("end", float, 1.0, "fraction of steps after which it stops", minimum=0, maximum=1),
        Param("resize", str, RESIZE_MODES[0], "how the image fits the size", choices=RESIZE_MODES),
        Param("mode", str, CONTROL_MODES[0], "A1111's Control Mode", choices=CONTROL_MODES),
        Param("module", str, "none", "A1111's preprocessor", choices=PREPROCESSORS),
        Param("threshold_a", (float, type(None)), None, "the preprocessor's first number"),
        Param("threshold_b", (float, type(None)), None, "the preprocessor's second number"),
        Param("allow_pickle", bool, False, "read a .pth / .ckpt ControlNet you trust"),
        Param("dtype", str, "float32", "the dtype it is read in", choices=DTYPES),
    )

    def execute(self, ctx, *, model, sigmas, controlnet, image, weight, start, end, resize,
                mode, module, threshold_a, threshold_b, allow_pickle, dtype):  # fmt: skip
        from t2i.modules import copy_if_moving
        from t2i_ldm.controlnet_checkpoint import load_controlnet

        if image is None:
            raise ValueError(
                "this pipeline was built with a ControlNet: give the control image "
                "(control_image=PATH_OR_IMAGE, or --option control_image=PATH)"
            )
        if start >= end:
            raise ValueError(f"control_start {start} must be below control_end {end}")
        if not hasattr(model, "with_control"):
            raise TypeError(f"{type(model).__name__} cannot be steered by a ControlNet")
        net = load_controlnet(controlnet, model.unet.config, dtype=getattr(torch, dtype),
                              allow_pickle=allow_pickle)  # fmt: skip
        net = copy_if_moving(net, ctx.device, model.dtype)
        image = preprocess(image, module, threshold_a, threshold_b)
        steps = sigmas.sigmas[:-1] if float(sigmas.sigmas[-1]) == 0 else sigmas.sigmas
        step_t = model.sigma_to_t(steps.double().cpu())
        steering = ControlSteering(net, image, weight=weight, start=start, end=end,
                                   resize=resize, step_t=step_t, mode=mode)  # fmt: skip
        return {"model": model.with_control(steering)}


def steer(recipe: Any, controlnet: Any, unet_config: Any, *, allow_pickle: bool = False,
          dtype: str = "float32") -> Any:  # fmt: skip
    """``recipe`` steered by ``controlnet`` (a path or a list of them), each file read now
    against ``unet_config`` (a bad one fails at build, naming the problem; the nodes then
    find it cached), then :func:`attach_controlnet`."""
    from t2i_ldm.controlnet_checkpoint import load_controlnet

    many = isinstance(controlnet, (list, tuple))
    paths = [str(p) for p in (controlnet if many else [controlnet])]
    for path in paths:
        load_controlnet(path, unet_config, dtype=getattr(torch, dtype), allow_pickle=allow_pickle)
    return attach_controlnet(recipe, paths, allow_pickle=allow_pickle, dtype=dtype,
                             infotext=controlnet_infotext(paths))  # fmt: skip


def unit_suffix(unit: int) -> str:
    """The request-field suffix of ControlNet unit ``unit``: "" for the first, ``_1`` ..."""
    return f"_{unit}" if unit else ""


def unit_fields(unit: int) -> dict[str, str]:
    """Unit ``unit``'s request fields -> ``Ldm.ApplyControlNet`` parameters."""
    return {f"{field}{unit_suffix(unit)}": param for field, param in FIELDS.items()}


def _unit_infotext(unit: int) -> dict[str, str]:
    name = f"ControlNet {unit}" if unit else "ControlNet"
    return {f"{f}{unit_suffix(unit)}": label.replace("ControlNet", name)
            for f, label in INFOTEXT_FIELDS.items()}  # fmt: skip


def attach_controlnet(
    recipe: Any, controlnets: list[str], *, allow_pickle: bool, dtype: str, infotext: dict
) -> Any:
    """The ``ldm`` recipe with one ``Ldm.ApplyControlNet`` per ControlNet (chained: their
    residuals add up) before each :data:`PASSES` guide of its graphs, unit ``k``'s request
    fields (:func:`unit_fields`) bound to its nodes, and the PNG fields."""
    import attrs

    bound: dict[bool, dict[str, list]] = {False: {}, True: {}}
    for img2img, graph in ((False, recipe.graph), (True, recipe.img2img_graph)):
        for guide, sigmas in PASSES if graph is not None else ():
            if guide not in graph:
                continue
            for unit, path in enumerate(controlnets):
                node_id = f"control_{guide}{unit_suffix(unit)}"
                graph.add(node_id, "Ldm.ApplyControlNet", model=graph[guide].inputs["model"],
                          sigmas=graph[sigmas]["sigmas"], controlnet=path,
                          allow_pickle=allow_pickle, dtype=dtype)  # fmt: skip
                graph.connect(graph[node_id]["model"], guide, "model")
                for field, param in unit_fields(unit).items():
                    bound[img2img].setdefault(field, []).append((node_id, param))
    labels = {k: v for unit in range(len(controlnets)) for k, v in _unit_infotext(unit).items()}
    # a start of 0 is written whether a request sends it or not (a 0 left unset is not)
    starts = {f"control_start{unit_suffix(u)}": 0.0 for u in range(len(controlnets))}
    recipe = with_bound_fields(recipe, bound, infotext, labels)
    return attrs.evolve(recipe, defaults={**starts, **recipe.defaults})


def with_bound_fields(recipe: Any, bound: dict[bool, dict[str, list]], infotext: dict,
                      labels: dict) -> Any:  # fmt: skip
    """``recipe`` with the request fields ``bound[img2img]`` (field -> node parameters) bound
    in its txt2img / img2img graphs, and the PNG ``infotext`` / field ``labels`` added."""
    import attrs

    bindings = {**recipe.bindings, **{f: tuple(t) for f, t in bound[False].items()}}
    img2img_bindings = recipe.img2img_bindings or recipe.bindings
    img2img_bindings = {**img2img_bindings, **{f: tuple(t) for f, t in bound[True].items()}}
    return attrs.evolve(
        recipe,
        bindings=bindings,
        img2img_bindings=img2img_bindings,
        infotext={**recipe.infotext, **infotext},
        infotext_fields={**recipe.infotext_fields, **labels},
    )


def controlnet_infotext(paths: list[str]) -> dict[str, str]:
    """``{"ControlNet": "NAME [HASH]", "ControlNet 1": ...}``: each file (or folder) name
    and A1111's 8-hex short hash, as its ControlNet extension names models."""
    return {f"ControlNet {k}" if k else "ControlNet": model_title(p) for k, p in enumerate(paths)}


def model_title(path: str | os.PathLike) -> str:
    """``NAME [HASH]`` of a ControlNet file or folder (A1111's ControlNet model names)."""
    from pathlib import Path

    from t2i.files import short_hash
    from t2i_ldm.controlnet_checkpoint import weights_file

    file, _ = weights_file(path)
    name = Path(path).stem if Path(path).is_file() else Path(path).name
    return f"{name} [{short_hash(file, 8)}]"
