"""Control-map preprocessors: A1111 ControlNet's "module", what turns a picture into the map a
ControlNet was trained on, run once per request at the image's own size.

- ``none``: the image is the map (a ready edge / depth / pose map);
- ``invert``: ``255 - image`` (A1111's "invert (from white bg & black line)": a black-on-white
  drawing becomes the white-on-black lines the line-art and scribble ControlNets read);
- ``canny``: OpenCV's Canny edge detector on the RGB image, ``cv2.Canny(image, low, high)``
  with ``threshold_a`` the low threshold (A1111's default 100) and ``threshold_b`` the high
  one (200): white edges on black, 3 channels (the map ``control_v11p_sd15_canny`` reads).
  OpenCV is an optional dependency (``pip install opencv-python-headless``);
- ``tile_resample``: the picture shrunk by ``threshold_a`` (A1111's "Down Sampling Rate",
  1 to 8, default 1) with area averaging, the input of the tile ControlNet
  (``control_v11f1e_sd15_tile``), which then restores detail at the request's size.

Preprocessors that need models of their own (depth, pose, line art) are not here: give
their map with ``none``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

PREPROCESSORS = ("none", "invert", "canny", "tile_resample")
CANNY_THRESHOLDS = (100.0, 200.0)
"""A1111's Canny low / high thresholds (``threshold_a`` / ``threshold_b``)."""


def load_control_image(image: Any) -> Any:
    """A PIL RGB image from a PIL image or a path."""
    from PIL import Image as PILImage

    if isinstance(image, (str, os.PathLike)):
        image = PILImage.open(image)
    return image.convert("RGB")


def canny(image: Any, low: float, high: float) -> Any:
    """White-on-black Canny edges of ``image`` (PIL RGB), 3 channels.

    Raises:
        ValueError: thresholds outside [0, 255] or low above high.
        ImportError: OpenCV is not installed (the message says how to get it).
    """
    if not 0 <= low <= high <= 255:
        raise ValueError(
            f"canny thresholds must satisfy 0 <= low (threshold_a) <= high (threshold_b) <= "
            f"255, got {low} and {high}"
        )
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "the canny preprocessor uses OpenCV: pip install opencv-python-headless "
            "(or give a ready edge map with module none)"
        ) from None
    from PIL import Image as PILImage

    edges = cv2.Canny(np.asarray(image, dtype=np.uint8), float(low), float(high))
    return PILImage.fromarray(np.repeat(edges[:, :, None], 3, axis=2))


def tile_resample(image: Any, rate: float) -> Any:
    """``image`` shrunk ``rate`` times (area averaging, PIL's box filter), at least 1 px."""
    from PIL import Image as PILImage

    if not 1 <= rate <= 8:
        raise ValueError(
            f"tile_resample's down sampling rate (threshold_a) must be in [1, 8], got {rate}"
        )
    w, h = image.size
    size = (max(1, round(w / rate)), max(1, round(h / rate)))
    return image if size == (w, h) else image.resize(size, PILImage.BOX)


def preprocess(
    image: Any, module: str, threshold_a: float | None = None, threshold_b: float | None = None
) -> Any:
    """The control map of ``image`` (PIL or path) by preprocessor ``module``
    (:data:`PREPROCESSORS`), a PIL RGB image; ``threshold_a`` / ``threshold_b``: the
    module's two numbers (None: its defaults)."""
    from PIL import ImageOps

    if module not in PREPROCESSORS:
        raise ValueError(
            f"no control preprocessor {module!r}; preprocessors: {', '.join(PREPROCESSORS)} "
            "(for depth, pose or line art give a ready map with none)"
        )
    image = load_control_image(image)
    if module == "invert":
        return ImageOps.invert(image)
    if module == "tile_resample":
        return tile_resample(image, 1.0 if threshold_a is None else threshold_a)
    if module == "canny":
        low = CANNY_THRESHOLDS[0] if threshold_a is None else threshold_a
        high = CANNY_THRESHOLDS[1] if threshold_b is None else threshold_b
        return canny(image, low, high)
    return image
