"""The shapes judge: a small multi-head CNN that reads a scene's attributes back from pixels.

Input: RGB images in [0, 1], any size; :func:`prepare` resizes them to ``JUDGE_SIZE`` (64) px
(bilinear, antialiased when shrinking). Heads (class ids index the tuples of
:mod:`t2i.shapes.vocabulary`):

====================  =========  ==============================================
head                  classes    read for
====================  =========  ==============================================
count                 2          all (0 = one object, 1 = two objects)
shape/color/size/     8/8/2/5    one-object scenes
position
arrangement           2          pairs (horizontal, vertical)
slot1_* / slot2_*     8/8/2      pairs: left-or-top object, right-or-bottom one
background            3          all
====================  =========  ==============================================

The penultimate layer (``FEATURE_DIM`` = 256 values) is the feature space of the benchmark's
Fréchet distance and diversity (:mod:`t2i.shapes.metrics`). The shipped weights live in
``core/shapes/judge.safetensors`` (float16, config JSON in the safetensors metadata), trained by
:mod:`t2i.shapes.train_judge`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from t2i.shapes import vocabulary as V
from t2i.shapes.scene import Scene, ShapeSpec

JUDGE_SIZE = 64
FEATURE_DIM = 256
DEFAULT_WEIGHTS = Path(__file__).with_name("judge.safetensors")

HEADS: dict[str, tuple[str, ...]] = {
    "count": ("one", "two"),
    "shape": V.SHAPES,
    "color": V.COLOR_NAMES,
    "size": V.SIZES,
    "position": V.POSITION_NAMES,
    "arrangement": V.ARRANGEMENTS,
    "slot1_shape": V.SHAPES,
    "slot1_color": V.COLOR_NAMES,
    "slot1_size": V.SIZES,
    "slot2_shape": V.SHAPES,
    "slot2_color": V.COLOR_NAMES,
    "slot2_size": V.SIZES,
    "background": V.BACKGROUND_NAMES,
}
SINGLE_HEADS = ("shape", "color", "size", "position")
PAIR_HEADS = (*(h for h in HEADS if h.startswith("slot")), "arrangement")
IGNORE = -100  # target id of a head that does not apply to a scene


class JudgeWeightsError(RuntimeError):
    """The judge's weights are missing or do not fit the model; the message says what to do."""


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.GELU(),
    )


class ShapesJudge(nn.Module):
    """Multi-head CNN judge (see the module docstring).

    Args:
        width: channels of the first stage (doubled twice on the way down).
        feature_dim: width of the penultimate (feature) layer.
    """

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.config = {"width": width, "feature_dim": feature_dim, "input_size": JUDGE_SIZE}
        w = width
        self.trunk = nn.Sequential(
            _block(3, w, 1),  # 64
            _block(w, w, 1),
            _block(w, 2 * w, 2),  # 32
            _block(2 * w, 2 * w, 1),
            _block(2 * w, 4 * w, 2),  # 16
            _block(4 * w, 4 * w, 1),
            _block(4 * w, 4 * w, 2),  # 8
            _block(4 * w, 4 * w, 2),  # 4
        )
        # Flattening the 4x4 map (no global pooling) keeps where things are: position matters.
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * 16, feature_dim), nn.GELU(), nn.Dropout(0.1)
        )
        self.heads = nn.ModuleDict(
            {name: nn.Linear(feature_dim, len(v)) for name, v in HEADS.items()}
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)`` of prepared images ``(B, 3, 64, 64)``."""
        return self.features(self.trunk((x - 0.5) / 0.25))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head, ``{name: (B, classes)}``, of prepared images ``(B, 3, 64, 64)``."""
        h = self.embed(x)
        return {name: head(h) for name, head in self.heads.items()}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def predict(
        self, images: Any, batch_size: int = 256
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Class ids per head and features of ``images`` (any input :func:`prepare` takes).

        Returns:
            ``({head: (N,) int64}, features (N, feature_dim) float32)``, on the CPU.
        """
        x = prepare(images)
        was_training = self.training
        self.eval()
        ids: dict[str, list[torch.Tensor]] = {name: [] for name in HEADS}
        feats = []
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start : start + batch_size].to(self.device, torch.float32)
            h = self.embed(chunk)
            feats.append(h.float().cpu())
            for name, head in self.heads.items():
                ids[name].append(head(h).argmax(-1).cpu())
        self.train(was_training)
        return {k: torch.cat(v) for k, v in ids.items()}, torch.cat(feats)

    def read(self, images: Any) -> list[Scene]:
        """The scene the judge sees in each image (pairs as "slot 1 left of / above slot 2")."""
        ids, _ = self.predict(images)
        return decode_predictions(ids)


def prepare(images: Any) -> torch.Tensor:
    """Images -> float32 ``(N, 3, 64, 64)`` in [0, 1], the judge's input.

    Args:
        images: a ``(N, 3, H, W)`` / ``(3, H, W)`` float tensor in [0, 1], a uint8 tensor of the
            same layout, a PIL image, or a sequence of PIL images.
    """
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, Sequence) and not isinstance(images, torch.Tensor):
        if not images:
            raise ValueError("no images to judge")
        arrays = []
        for im in images:
            if not isinstance(im, Image.Image):
                raise TypeError(f"expected PIL images, got {type(im)}")
            arrays.append(_resize(_pil_tensor(im)))
        return torch.cat(arrays)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"judge input must be a tensor or PIL image(s), got {type(images)}")
    x = images
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"judge input must be (N, 3, H, W) RGB, got shape {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return _resize(x.clamp(0, 1))


def _pil_tensor(im: Image.Image) -> torch.Tensor:
    array = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)


def _resize(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == (JUDGE_SIZE, JUDGE_SIZE):
        return x
    shrink = x.shape[-1] > JUDGE_SIZE or x.shape[-2] > JUDGE_SIZE
    return F.interpolate(
        x, size=(JUDGE_SIZE, JUDGE_SIZE), mode="bilinear", align_corners=False, antialias=shrink
    ).clamp(0, 1)


def scene_targets(scene: Scene) -> dict[str, int]:
    """Class id per head for a complete scene (``IGNORE`` where a head does not apply)."""
    t = dict.fromkeys(HEADS, IGNORE)
    t["background"] = V.BACKGROUND_NAMES.index(scene.background)
    if scene.kind == "single":
        o = scene.objects[0]
        t["count"] = 0
        t["shape"], t["color"] = V.SHAPES.index(o.shape), V.COLOR_NAMES.index(o.color)
        t["size"], t["position"] = V.SIZES.index(o.size), V.POSITION_NAMES.index(o.position)
    else:
        t["count"] = 1
        t["arrangement"] = V.ARRANGEMENTS.index(scene.arrangement)
        for k, o in enumerate(scene.slots(), start=1):
            t[f"slot{k}_shape"] = V.SHAPES.index(o.shape)
            t[f"slot{k}_color"] = V.COLOR_NAMES.index(o.color)
            t[f"slot{k}_size"] = V.SIZES.index(o.size)
    return t


def decode_predictions(ids: dict[str, torch.Tensor]) -> list[Scene]:
    """Turn per-head class ids ``{head: (N,)}`` into the scenes the judge read."""
    scenes = []
    for i in range(len(ids["count"])):
        g = {name: HEADS[name][int(v[i])] for name, v in ids.items()}
        if g["count"] == "one":
            obj = ShapeSpec(g["shape"], g["color"], g["size"], g["position"])
            scenes.append(Scene((obj,), None, g["background"]))
            continue
        arrangement = g["arrangement"]
        first_pos, second_pos = V.SLOT_POSITIONS[arrangement]
        a = ShapeSpec(g["slot1_shape"], g["slot1_color"], g["slot1_size"], first_pos)
        b = ShapeSpec(g["slot2_shape"], g["slot2_color"], g["slot2_size"], second_pos)
        relation = "left of" if arrangement == "horizontal" else "above"
        scenes.append(Scene((a, b), relation, g["background"]))
    return scenes


def save_judge(model: ShapesJudge, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write float16 weights + config/vocabulary metadata to a safetensors file."""
    from safetensors.torch import save_file

    state = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {
        "format": "t2i.shapes.judge",
        "config": json.dumps(model.config),
        "vocabulary_version": V.VOCABULARY_VERSION,
        "heads": json.dumps({k: list(v) for k, v in HEADS.items()}),
    }
    if extra:
        meta["training"] = json.dumps(extra)
    save_file(state, str(path), metadata=meta)


def load_judge(path: str | Path | None = None, device: str | torch.device = "cpu") -> ShapesJudge:
    """Load the judge (the shipped ``core/shapes/judge.safetensors`` by default), in eval mode.

    Raises:
        JudgeWeightsError: the file is missing, was trained for another vocabulary or its
            tensors do not fit the model.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise JudgeWeightsError(
            f"judge weights not found at {path}; train them with "
            "`python -m t2i.shapes.train_judge --out DIR` and copy DIR/judge.safetensors there"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("vocabulary_version") != V.VOCABULARY_VERSION:
        raise JudgeWeightsError(
            f"{path} was trained for vocabulary {meta.get('vocabulary_version')!r}, this code "
            f"uses {V.VOCABULARY_VERSION!r}; retrain the judge"
        )
    config = json.loads(meta["config"])
    model = ShapesJudge(width=config["width"], feature_dim=config["feature_dim"])
    state = load_file(str(path))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise JudgeWeightsError(
            f"{path} does not fit ShapesJudge: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    return model.to(device).eval()
