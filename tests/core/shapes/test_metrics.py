import numpy as np
import pytest
import scipy.linalg

from t2i.shapes.metrics import (
    attribute_matches,
    diversity,
    frechet_distance,
    prompt_alignment,
)
from t2i.shapes.scene import Scene, ShapeSpec


def _frechet_reference(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng()
    a = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(loc=0.5, size=(150, 6)) @ rng.normal(size=(6, 6))
    assert frechet_distance(a, b) == pytest.approx(_frechet_reference(a, b), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + 3.0
    assert frechet_distance(a, shifted) == pytest.approx(9.0 * 6, rel=1e-6)


def test_diversity_is_mean_pairwise_distance():
    f = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert diversity([f]) == pytest.approx((5 + 5 + 0) / 3)
    assert diversity([np.zeros((4, 3))]) == 0.0


def _single(shape, color, size=None, position=None, background=None):
    return Scene((ShapeSpec(shape, color, size, position),), None, background)


def test_attribute_matches_single():
    read = _single("star", "red", "large", "left", "white")
    assert all(attribute_matches(_single("star", "red", None, "left"), read).values())
    m = attribute_matches(_single("star", "red", "small", "left", "black"), read)
    assert m == {"count": True, "background": False, "single.shape": True,
                 "single.color": True, "single.size": False, "single.position": True}  # fmt: skip


def test_attribute_matches_pair_uses_relation_to_order_objects():
    read = Scene(
        (ShapeSpec("circle", "red", "small", "left"), ShapeSpec("star", "blue", "large", "right")),
        "left of",
        "gray",
    )
    same = Scene((ShapeSpec("star", "blue"), ShapeSpec("circle", "red", "small")), "right of")
    assert all(attribute_matches(same, read).values())
    swapped = Scene((ShapeSpec("star", "blue"), ShapeSpec("circle", "red")), "left of")
    m = attribute_matches(swapped, read)
    assert m["pair.relation"] and not m["pair.shape"] and not m["pair.color"]
    vertical = Scene((ShapeSpec("circle", "red"), ShapeSpec("star", "blue")), "above")
    assert not attribute_matches(vertical, read)["pair.relation"]
    assert not all(attribute_matches(same, _single("star", "blue", "large", "left")).values())


def test_prompt_alignment_breakdown():
    s1 = _single("circle", "red", None, "left")
    pair = Scene((ShapeSpec("star", "blue"), ShapeSpec("circle", "red")), "above")
    stated = [s1, s1, pair]
    read = [_single("circle", "red", "small", "left", "white"),
            _single("circle", "blue", "small", "left", "white"), s1.__class__(
                (ShapeSpec("star", "blue", "small", "top"), ShapeSpec("circle", "red", "small",
                 "bottom")), "above", "white")]  # fmt: skip
    a = prompt_alignment(stated, read)
    assert a["overall"] == pytest.approx(2 / 3) and a["single"] == 0.5 and a["pair"] == 1.0
    assert a["per_attribute"]["single.color"] == 0.5 and a["per_attribute"]["count"] == 1.0
    with pytest.raises(ValueError):
        prompt_alignment(stated, read[:2])
