"""Guidance components: wrap a denoiser, return a denoiser (``t2i.contracts.Guidance``).

Public API: :class:`ClassifierFreeGuidance` (``cfg``), :class:`DynamicThresholding`
(``dynamic``), :class:`StaticThresholding` (``static``), :class:`CFGRescale`
(``rescale``), :class:`NoGuidance` (``none``), :class:`GuidedDenoiser`.
"""

from t2i.diffusion.guidance.guidance import (
    CFGRescale,
    ClassifierFreeGuidance,
    DynamicThresholding,
    GuidedDenoiser,
    NoGuidance,
    StaticThresholding,
    cfg_combine,
    dynamic_threshold,
)

__all__ = [
    "CFGRescale",
    "ClassifierFreeGuidance",
    "DynamicThresholding",
    "GuidedDenoiser",
    "NoGuidance",
    "StaticThresholding",
    "cfg_combine",
    "dynamic_threshold",
]
