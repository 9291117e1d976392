"""Scores of the shapes benchmark: prompt alignment, Fréchet distance, diversity.

* **Alignment** (GenEval's rule, Ghosh et al. 2023): an image is aligned with its prompt when
  the judge reads back *every* attribute the prompt states, and the right number of objects.
  Reported overall, per scene type (single / pair) and per attribute.
* **Fréchet distance** (Heusel et al. 2017, "GANs trained by a two time-scale update rule..."):
  ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between Gaussians fitted to the judge's
  penultimate features of generated images and of real renders, computed in float64 with
  ``tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(S1 S2))`` (the eigenvalues of a product of two
  PSD matrices are real and >= 0; round-off below zero is clipped).
* **Diversity**: mean pairwise Euclidean distance between judge features of the images of one
  prompt across seeds, averaged over prompts (0 = every seed gives the same picture).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from t2i.shapes.scene import Scene

#: Attribute keys of the per-attribute breakdown.
ATTRIBUTES: tuple[str, ...] = (
    "count",
    "background",
    "single.shape",
    "single.color",
    "single.size",
    "single.position",
    "pair.relation",
    "pair.shape",
    "pair.color",
    "pair.size",
)


def attribute_matches(stated: Scene, read: Scene) -> dict[str, bool]:
    """Which stated attributes the judge read back.

    Args:
        stated: the prompt's record (None = not stated).
        read: the scene the judge read (complete).

    Returns:
        ``{attribute: matched}`` for ``count`` and every attribute the prompt states. A pair's
        ``pair.shape``/``pair.color``/``pair.size`` is matched when both objects match; its
        ``pair.relation`` when the judge sees the same arrangement (horizontal / vertical), the
        objects' order being checked through the slots they are compared in.
    """
    out = {"count": read.kind == stated.kind}
    if stated.background is not None:
        out["background"] = read.background == stated.background
    if stated.kind == "single":
        s, r = stated.objects[0], read.objects[0] if read.kind == "single" else None
        for name in ("shape", "color", "size", "position"):
            if getattr(s, name) is not None:
                out[f"single.{name}"] = r is not None and getattr(r, name) == getattr(s, name)
        return out
    same_kind = read.kind == "pair"
    out["pair.relation"] = same_kind and read.arrangement == stated.arrangement
    want = stated.slots()
    got = read.slots() if same_kind else (None, None)
    for name in ("shape", "color", "size"):
        pairs = [(w, g) for w, g in zip(want, got) if getattr(w, name) is not None]
        if pairs:
            out[f"pair.{name}"] = all(
                g is not None and getattr(g, name) == getattr(w, name) for w, g in pairs
            )
    return out


def prompt_alignment(stated: Sequence[Scene], read: Sequence[Scene]) -> dict:
    """Alignment of images with their prompts.

    Args:
        stated: the prompt record of each image.
        read: the judge's reading of each image (same order).

    Returns:
        ``{"overall", "single", "pair", "per_attribute": {attribute: share}, "aligned":
        [bool per image], "counts": {"single": n, "pair": n}}``; a share is NaN when nothing
        was asked of that kind.
    """
    if len(stated) != len(read):
        raise ValueError(f"{len(stated)} prompt records but {len(read)} readings")
    aligned, by_kind = [], defaultdict(list)
    per_attr = defaultdict(list)
    for s, r in zip(stated, read):
        m = attribute_matches(s, r)
        ok = all(m.values())
        aligned.append(ok)
        by_kind[s.kind].append(ok)
        for k, v in m.items():
            per_attr[k].append(v)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {
        "overall": mean(aligned),
        "single": mean(by_kind["single"]),
        "pair": mean(by_kind["pair"]),
        "per_attribute": {k: mean(per_attr[k]) for k in ATTRIBUTES if k in per_attr},
        "aligned": aligned,
        "counts": {"single": len(by_kind["single"]), "pair": len(by_kind["pair"])},
    }


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    return x


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)``, ``(M, D)``.

    Needs N, M >= 2. With fewer samples than dimensions the covariances are singular; the
    value is still defined (and biased upward at small N, as FID is).
    """
    a, b = _as_float64(features_a), _as_float64(features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(cov_a @ cov_b)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt
    return float(max(value, 0.0))


def diversity(features_per_prompt: Sequence) -> float:
    """Mean pairwise L2 distance of features across seeds, averaged over prompts.

    Args:
        features_per_prompt: one ``(K, D)`` array per prompt (K seeds); prompts with K < 2 are
            skipped.
    """
    values = []
    for f in features_per_prompt:
        f = _as_float64(f)
        if f.shape[0] < 2:
            continue
        d = np.sqrt(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))
        k = f.shape[0]
        values.append(d.sum() / (k * (k - 1)))
    return float(np.mean(values)) if values else float("nan")


def parameter_count(module: torch.nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())
