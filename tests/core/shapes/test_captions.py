import numpy as np
import pytest

from t2i.shapes.captions import CaptionParseError, make_caption, parse_caption
from t2i.shapes.scene import Scene
from t2i.shapes.splits import random_scene


def test_captions_state_only_true_attributes_and_parse_back():
    rng = np.random.default_rng()
    texts = set()
    for _ in range(400):
        scene = random_scene(rng, "pair" if rng.random() < 0.5 else "single")
        cap = make_caption(scene, rng)
        texts.add(cap.text)
        assert parse_caption(cap.text) == cap.stated
        assert parse_caption("  " + cap.text.upper() + ". ") == cap.stated
        stated = cap.stated
        assert stated.relation == scene.relation and stated.kind == scene.kind
        assert stated.background in (None, scene.background)
        for s, t in zip(stated.objects, scene.objects):
            assert (s.shape, s.color) == (t.shape, t.color)
            assert s.size in (None, t.size)
        if scene.kind == "single":
            assert stated.objects[0].position == scene.objects[0].position
    assert len(texts) > 300  # templates and synonyms vary the wording


def test_captions_sometimes_omit_size_and_background():
    rng = np.random.default_rng(0)
    caps = [make_caption(random_scene(rng, "single"), rng) for _ in range(200)]
    sizes = [c.stated.objects[0].size for c in caps]
    bgs = [c.stated.background for c in caps]
    assert None in sizes and any(s is not None for s in sizes)
    assert None in bgs and any(b is not None for b in bgs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a large red circle on the left",
            {"kind": "single", "objects": [{"shape": "circle", "color": "red", "size": "large",
              "position": "left"}], "relation": None, "background": None},
        ),
        (
            "a blue square below a green star, grey background",
            {"kind": "pair", "objects": [
                {"shape": "square", "color": "blue", "size": None, "position": None},
                {"shape": "star", "color": "green", "size": None, "position": None}],
             "relation": "below", "background": "gray"},
        ),
    ],
)  # fmt: skip
def test_parse_handwritten_captions(text, expected):
    assert parse_caption(text).to_dict() == expected
    assert Scene.from_dict(expected) == parse_caption(text)


@pytest.mark.parametrize(
    "text", ["a red circle", "a dog on the left", "red circle blue star above"]
)
def test_unparseable_caption_says_why(text):
    with pytest.raises(CaptionParseError):
        parse_caption(text)
