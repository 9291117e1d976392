"""Train / val / test splits of the shapes benchmark: disjoint seeds AND held-out combinations.

Two things keep test scenes out of training:

* seed ranges: the scene of item ``i`` of split ``s`` is drawn from seed
  ``SPLIT_SEED_BASE[s] + seed * 2**32 + i``; the ranges of the three splits never meet;
* held-out combinations: a hash (SHA-256, so stable across Python runs) puts about
  ``HELDOUT_FRACTION`` of the single-object tuples (shape, colour, size, position) and of the
  pair tuples (slot-1 shape/colour/size, slot-2 shape/colour/size, arrangement) in the test
  split only. ``train`` and ``val`` never draw them; ``test`` draws them half of the time.
"""

from __future__ import annotations

import hashlib

import attrs
import numpy as np

from t2i.shapes import vocabulary as V
from t2i.shapes.scene import Scene, ShapeSpec

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_SEED_BASE: dict[str, int] = {"train": 0, "val": 10**12, "test": 2 * 10**12}
MAX_DATASET_SEED = 200  # 200 * 2**32 < 10**12: the split ranges stay disjoint
MAX_INDEX = 2**32
HELDOUT_FRACTION = 0.10
TEST_HELDOUT_SHARE = 0.5


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)}")
    return split


def scene_seed(split: str, index: int, seed: int = 0) -> int:
    """The seed of item ``index`` of ``split`` in the dataset seeded ``seed``."""
    check_split(split)
    if not 0 <= seed < MAX_DATASET_SEED:
        raise ValueError(f"dataset seed must be in [0, {MAX_DATASET_SEED}), got {seed}")
    if not 0 <= index < MAX_INDEX:
        raise ValueError(f"index must be in [0, 2**32), got {index}")
    return SPLIT_SEED_BASE[split] + seed * MAX_INDEX + index


def split_of_seed(value: int) -> str:
    """Inverse of :func:`scene_seed` for the split: which split's range holds ``value``."""
    for split in reversed(SPLITS):
        if value >= SPLIT_SEED_BASE[split]:
            return split
    raise ValueError(f"negative scene seed {value}")


def _hashed_fraction(key: str) -> float:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def single_key(spec: ShapeSpec) -> str:
    return f"single|{spec.shape}|{spec.color}|{spec.size}|{spec.position}"


def pair_key(scene: Scene) -> str:
    first, second = scene.slots()
    return (
        f"pair|{scene.arrangement}|{first.shape}|{first.color}|{first.size}"
        f"|{second.shape}|{second.color}|{second.size}"
    )


def is_heldout(scene: Scene) -> bool:
    """True when the scene's combination appears in the test split only.

    The background is not part of the combination; a pair is keyed by its slots, so
    "A left of B" and "B right of A" are the same combination.
    """
    key = single_key(scene.objects[0]) if scene.kind == "single" else pair_key(scene)
    return _hashed_fraction(key) < HELDOUT_FRACTION


def _random_object(rng: np.random.Generator, position: str | None) -> ShapeSpec:
    return ShapeSpec(
        shape=V.SHAPES[rng.integers(len(V.SHAPES))],
        color=V.COLOR_NAMES[rng.integers(len(V.COLOR_NAMES))],
        size=V.SIZES[rng.integers(len(V.SIZES))],
        position=position,
    )


def random_scene(rng: np.random.Generator, kind: str) -> Scene:
    """A complete scene of ``kind`` ("single"/"pair") from all combinations (held-out ones too).

    The judge trains on these: it must read every combination, the generators only the
    training ones.
    """
    background = V.BACKGROUND_NAMES[rng.integers(len(V.BACKGROUND_NAMES))]
    if kind == "single":
        position = V.POSITION_NAMES[rng.integers(len(V.POSITION_NAMES))]
        return Scene((_random_object(rng, position),), None, background)
    relation = V.RELATIONS[rng.integers(len(V.RELATIONS))]
    while True:  # the two objects differ in shape or colour, so captions name them apart
        a, b = _random_object(rng, None), _random_object(rng, None)
        if (a.shape, a.color) != (b.shape, b.color):
            break
    slot_names = V.SLOT_POSITIONS[V.RELATION_ARRANGEMENT[relation]]
    first_slot = relation in ("left of", "above")
    a = ShapeSpec(a.shape, a.color, a.size, slot_names[0 if first_slot else 1])
    b = ShapeSpec(b.shape, b.color, b.size, slot_names[1 if first_slot else 0])
    return Scene((a, b), relation, background)


def sample_scene(rng: np.random.Generator, split: str, pair_fraction: float = 0.5) -> Scene:
    """Draw one complete scene of ``split`` (single or pair, respecting held-out combinations).

    Args:
        rng: the generator to draw from.
        split: ``"train"``, ``"val"`` or ``"test"``.
        pair_fraction: probability of a two-object scene.
    """
    check_split(split)
    kind = "pair" if rng.random() < pair_fraction else "single"
    want_heldout = split == "test" and rng.random() < TEST_HELDOUT_SHARE
    while True:
        scene = random_scene(rng, kind)
        if is_heldout(scene) == want_heldout:
            return scene


def complete_scene(stated: Scene, rng: np.random.Generator) -> Scene:
    """Fill the attributes a caption record leaves out (size, background) at random.

    The result is renderable; a pair's positions follow from its relation. This is what an
    "oracle" generator does: ``render(complete_scene(parse_caption(prompt), rng))``.
    """
    objs = [
        ShapeSpec(o.shape, o.color, o.size or V.SIZES[rng.integers(len(V.SIZES))], o.position)
        for o in stated.objects
    ]
    if stated.kind == "pair":
        first, second = V.SLOT_POSITIONS[stated.arrangement]
        a_first = stated.relation in ("left of", "above")
        objs[0] = attrs.evolve(objs[0], position=first if a_first else second)
        objs[1] = attrs.evolve(objs[1], position=second if a_first else first)
    elif objs[0].position is None:
        objs[0] = attrs.evolve(objs[0], position=V.POSITION_NAMES[rng.integers(len(V.POSITIONS))])
    background = stated.background or V.BACKGROUND_NAMES[rng.integers(len(V.BACKGROUNDS))]
    return Scene(tuple(objs), stated.relation, background)
