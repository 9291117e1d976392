"""Fuzz: random inpainting fields (mask of any mode / size / content, blur, fill, only
masked, padding, invert) through ``make_request`` and, when they pass, a run.

Rule (as ``test_fuzz_requests``): ``make_request`` returns a request or raises a documented
error; a request it returns runs to the end.
"""

from __future__ import annotations

import pytest
from fuzz_rules import bounded_memory, fuzz_settings, obeys_rule
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from t2i import Engine
from t2i.testing import make_manager, toy_plugin

pytestmark = pytest.mark.filterwarnings("ignore")
PIPE = Engine.build("toy-diffusion", plugins=make_manager(toy_plugin))


class ValidationGap(Exception):
    """A request passed ``make_request`` and then failed while running."""


BAD = st.sampled_from([None, "", -1, 2**40, 1.5, True, [], {}, "latent", b"x", float("nan")])


@st.composite
def masks(draw):
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "1", "LA", "P", "I", "F"]))
    size = draw(st.sampled_from([(8, 8), (8, 8), (8, 8), (12, 8), (1, 1)]))
    mask = Image.new(mode, size)
    if draw(st.booleans()):
        x1, y1 = draw(st.integers(0, size[0] - 1)), draw(st.integers(0, size[1] - 1))
        x2, y2 = draw(st.integers(x1 + 1, size[0])), draw(st.integers(y1 + 1, size[1]))
        mask.paste(
            255 if mode in ("L", "1", "P", "I", "F") else (255,) * len(mode), (x1, y1, x2, y2)
        )
    return mask


def _field(valid):
    return st.one_of(valid, valid, BAD)


FIELDS = {
    "mask": st.one_of(masks(), masks(), masks(), BAD),
    "mask_blur": _field(st.integers(0, 40)),
    "inpainting_fill": _field(
        st.sampled_from([0, 1, 2, 3, "fill", "original", "latent noise", "latent nothing"])
    ),
    "inpaint_full_res": _field(st.booleans()),
    "inpaint_full_res_padding": _field(st.integers(0, 64)),
    "inpainting_mask_invert": _field(st.integers(0, 1)),
    "width": st.sampled_from([8, 16, 24]),
    "height": st.sampled_from([8, 16]),
    "batch_size": st.integers(1, 2),
    "strength": st.floats(0, 1),
}


@st.composite
def requests(draw):
    chosen = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=6, unique=True))
    fields = {name: draw(FIELDS[name]) for name in chosen}
    fields.setdefault("mask", draw(masks()))
    return fields


@fuzz_settings(120)
@given(fields=requests())
def test_random_inpainting_fields(fields):
    init = Image.new("RGB", (8, 8), (40, 160, 90))

    def target() -> None:
        request = PIPE.make_request(init_image=init, steps=2, sampler="euler", **fields)
        try:
            result = PIPE.run(request)
        except Exception as exc:  # a request make_request let through must run
            raise ValidationGap(f"{fields!r}: {type(exc).__name__}: {exc}") from exc
        assert len(result.images) == request.batch_size

    with bounded_memory():
        obeys_rule("inpaint requests", target)
