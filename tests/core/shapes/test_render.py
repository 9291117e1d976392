import numpy as np
import pytest

from t2i.shapes import vocabulary as V
from t2i.shapes.render import render_array
from t2i.shapes.scene import Scene, ShapeSpec
from t2i.shapes.splits import random_scene


def _object_mask(img: np.ndarray, background: str) -> np.ndarray:
    bg = np.array(V.BACKGROUNDS[background], dtype=np.int32)
    return np.abs(img.astype(np.int32) - bg).max(-1) > 40


@pytest.mark.parametrize("size", [32, 64, 128])
def test_render_is_deterministic_per_seed_and_varies_across_seeds(size):
    rng = np.random.default_rng()
    scene = random_scene(rng, "pair")
    seed = int(rng.integers(2**31))
    a, b = render_array(scene, size, seed), render_array(scene, size, seed)
    assert a.shape == (size, size, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_array(scene, size, seed + 1))  # jitter moves things


def test_render_is_anti_aliased():
    scene = Scene((ShapeSpec("circle", "blue", "large", "center"),), None, "white")
    img = render_array(scene, 64, 0).astype(np.int32)
    blue, white = np.array(V.COLORS["blue"]), np.array(V.BACKGROUNDS["white"])
    # Edge pixels are blends of the two colours, not one or the other.
    t = ((img - white) * (blue - white)).sum(-1) / ((blue - white) ** 2).sum()
    assert ((t > 0.15) & (t < 0.85)).sum() >= 20


@pytest.mark.parametrize("position", V.POSITION_NAMES)
def test_single_object_sits_at_its_position(position):
    rng = np.random.default_rng()
    spec = ShapeSpec(V.SHAPES[rng.integers(8)], V.COLOR_NAMES[rng.integers(8)], "small", position)
    scene = Scene((spec,), None, V.BACKGROUND_NAMES[rng.integers(3)])
    mask = _object_mask(render_array(scene, 64, int(rng.integers(1000))), scene.background)
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() / 64, ys.mean() / 64
    ex, ey = V.POSITIONS[position]
    assert abs(cx - ex) < 0.07 and abs(cy - ey) < 0.07


@pytest.mark.parametrize("relation", V.RELATIONS)
def test_pair_objects_follow_the_relation(relation):
    scene = Scene(
        (ShapeSpec("square", "red", "large"), ShapeSpec("circle", "blue", "small")),
        relation,
        "black",
    )
    img = render_array(scene, 64, 3).astype(np.int32)
    red = (np.abs(img - np.array(V.COLORS["red"])).max(-1) < 40).nonzero()
    blue = (np.abs(img - np.array(V.COLORS["blue"])).max(-1) < 40).nonzero()
    (ry, rx), (by, bx) = (np.mean(red, axis=1), np.mean(blue, axis=1))
    expect = {"left of": rx < bx, "right of": rx > bx, "above": ry < by, "below": ry > by}
    assert expect[relation]
    assert len(red[0]) > len(blue[0])  # large vs small


def test_large_objects_cover_more_than_small_ones():
    for shape in V.SHAPES:
        areas = {}
        for size in V.SIZES:
            scene = Scene((ShapeSpec(shape, "green", size, "center"),), None, "gray")
            areas[size] = _object_mask(render_array(scene, 64, 0), "gray").sum()
        assert areas["large"] > 2 * areas["small"], shape


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="shapes vocabulary"):
        ShapeSpec("blob", "red", "small", "left")
    with pytest.raises(ValueError, match="relation"):
        Scene((ShapeSpec("circle", "red"), ShapeSpec("star", "blue")), None, "white")
    incomplete = Scene((ShapeSpec("circle", "red", None, "left"),), None, "white")
    with pytest.raises(ValueError, match="unset attributes"):
        render_array(incomplete, 64, 0)
    full = Scene((ShapeSpec("circle", "red", "small", "left"),), None, "white")
    with pytest.raises(ValueError, match="size"):
        render_array(full, 7, 0)


def test_object_colours_are_far_from_backgrounds_and_each_other():
    cols = np.array(list(V.COLORS.values()), dtype=float)
    bgs = np.array(list(V.BACKGROUNDS.values()), dtype=float)
    d_obj = np.linalg.norm(cols[:, None] - cols[None], axis=-1) + np.eye(len(cols)) * 1e9
    d_bg = np.linalg.norm(cols[:, None] - bgs[None], axis=-1)
    assert d_obj.min() > 60 and d_bg.min() > 100
