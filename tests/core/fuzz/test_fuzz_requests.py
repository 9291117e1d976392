"""Fuzz: random request fields through ``Pipeline.make_request`` and, when they pass, a run.

Rule: ``make_request`` returns a request or raises a documented error; a request it returns
runs to the end (validation happens before any model work, so nothing is refused inside a
node).
"""

from __future__ import annotations

import math

import pytest
from fuzz_rules import bounded_memory, fuzz_settings, obeys_rule
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from t2i import Engine
from t2i.request import REQUEST_FIELDS
from t2i.testing import make_manager, toy_plugin

pytestmark = pytest.mark.filterwarnings("ignore")
MANAGER = make_manager(toy_plugin)
PIPES = {
    name: Engine.build(name, plugins=MANAGER)
    for name in ("toy-diffusion", "toy-ar", "toy-cascade", "toy-gan")
}
REG = MANAGER.registry


def _names(kind: str) -> list[str]:
    return [n for e in REG.entries(kind) for n in (e.name, *e.aliases)]


BAD = st.sampled_from(
    [
        None,
        "",
        "  ",
        "\ud800",
        "caf\udce9",
        -1,
        0,
        -(2**31),
        2**32,
        10**20,
        math.nan,
        math.inf,
        -math.inf,
        True,
        1.5,
        [],
        {},
        [1, 2],
        {"a": 1},
        b"bytes",
        "not-a-name",
        "x" * 200_001,
    ]
)
"""Values that are wrong for most fields (a few are right for some: that is fine)."""


def _image_modes() -> st.SearchStrategy:
    return st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16", "I", "F", "CMYK", "LA"]).map(
        lambda mode: Image.new(mode, (8, 8))
    )


def _field(valid: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(valid, valid, BAD)  # two in three valid, so that many requests run


FIELDS = {
    "prompt": _field(st.text(max_size=12)),
    "negative_prompt": _field(st.text(max_size=12)),
    "steps": _field(st.integers(1, 3)),
    "cfg_scale": _field(st.floats(0, 12)),
    "sampler": _field(st.sampled_from([*_names("sampler"), "DPM++ 2M Karras", "Euler a"])),
    "schedule": _field(st.sampled_from([*_names("schedule"), "Automatic", None])),
    "guidance": _field(st.sampled_from(_names("guidance"))),
    "seed": _field(st.integers(-1, 2**32 - 1)),
    "width": _field(st.sampled_from([8, 12, 16])),
    "height": _field(st.sampled_from([8, 12, 16])),
    "batch_size": _field(st.integers(1, 2)),
    "batch_count": _field(st.integers(1, 2)),
    "strength": _field(st.floats(0, 1)),
    "eta": _field(st.one_of(st.none(), st.floats(0, 2))),
    "noise_device": _field(st.sampled_from(["cpu", "device"])),
    "guidance_options": _field(
        st.dictionaries(
            st.sampled_from(["percentile", "max_value", "phi", "space", "limit", "threshold", "x"]),
            st.one_of(st.floats(-1, 2), st.sampled_from(["v", "x0", "bogus"]), st.none()),
            max_size=2,
        )
    ),
    "temperature": _field(st.floats(0, 3)),
    "top_k": _field(st.one_of(st.none(), st.integers(0, 8))),
    "top_p": _field(st.one_of(st.none(), st.floats(0, 1.5))),
    "noise_level": st.one_of(st.floats(-2, 2), st.sampled_from([None, "x", [], True, {}])),
    "clip_skip": st.integers(1, 3),  # a field no toy recipe binds
}


class ValidationGap(Exception):
    """A request passed ``make_request`` and then failed while running."""


@st.composite
def requests(draw):
    recipe = draw(st.sampled_from(sorted(PIPES)))
    pipe = PIPES[recipe]
    own = sorted(f for f in FIELDS if f in REQUEST_FIELDS or f in pipe.recipe.bindings)
    names = st.sampled_from(own) if draw(st.integers(0, 9)) else st.sampled_from(sorted(FIELDS))
    chosen = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    fields = {name: draw(FIELDS[name]) for name in chosen}
    if recipe == "toy-diffusion" and draw(st.integers(0, 3)) == 0:
        fields["init_image"] = draw(_image_modes())
    return recipe, fields


@fuzz_settings(200)
@given(case=requests())
def test_random_request_fields(case):
    recipe, fields = case
    pipe = PIPES[recipe]

    def target() -> None:
        request = pipe.make_request(**fields)
        try:
            pipe.run(request)
        except Exception as exc:
            raise ValidationGap(f"{recipe} {fields!r}: {type(exc).__name__}: {exc}") from exc

    with bounded_memory():
        obeys_rule("requests", target)


def test_init_image_files(tmp_path):
    """Files that are not images, and images of every mode, before any model work."""
    pipe = PIPES["toy-diffusion"]
    (tmp_path / "text.png").write_text("not a png")
    (tmp_path / "cut.png").write_bytes(_png()[:40])
    (tmp_path / "dir.png").mkdir()
    for name in ("text.png", "cut.png", "dir.png", "missing.png"):
        error = obeys_rule("init files", lambda n=name: pipe.make_request(init_image=tmp_path / n))
        assert error is not None and "init_image" in str(error), name
    (tmp_path / "ok.png").write_bytes(_png())
    request = pipe.make_request(init_image=str(tmp_path / "ok.png"), seed=1)
    assert request.init_image.mode == "RGB"
    pipe.run(request)


def _png() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()
