"""Issue 22: every request field is checked in ``make_request``, before any model work, and
``Engine.build`` blames its options only for what the call itself refused."""

from __future__ import annotations

import pytest
from PIL import Image

from t2i import Engine
from t2i.engine import EngineError
from t2i.graph import GraphValidationError
from t2i.registry import UnknownComponentError, hookimpl
from t2i.request import RequestError
from t2i.testing import make_manager, toy_plugin

BAD_FIELDS = [
    ("prompt", 3),
    ("prompt", "a \ud800 cube"),  # a lone surrogate: not encodable
    ("prompt", "x" * 100_001),
    ("negative_prompt", "caf\udce9"),
    ("steps", 0),
    ("steps", 2.5),
    ("cfg_scale", float("nan")),
    ("cfg_scale", "7"),
    ("sampler", ""),
    ("sampler", 5),
    ("schedule", 5),  # once an AttributeError
    ("schedule", ["karras"]),
    ("guidance", ""),  # once failed inside the Guide node
    ("guidance", None),
    ("seed", 2**32),
    ("seed", True),
    ("width", 0),
    ("height", 9000),
    ("batch_size", 0),
    ("batch_count", 10_001),
    ("strength", 1.5),
    ("init_image", 42),  # not an image: once failed inside LoadImage
    ("init_image", b"\x89PNG"),
    ("eta", -0.1),
    ("noise_device", "tpu"),
    ("guidance_options", 5),
    ("guidance_options", {"bogus": 1}),  # an unknown key: once failed inside Guide
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
def test_each_field_is_refused_before_any_model_work(t2i_manager, field, value):
    pipe = Engine.build("toy-diffusion")
    with pytest.raises(RequestError) as info:
        pipe(**{"prompt": "a cube", field: value})
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")
    assert toy_plugin.CALLS["denoiser"] == 0 and toy_plugin.CALLS["text_encoder"] == 0


@pytest.mark.parametrize(
    ("recipe", "fields", "field", "needle"),
    [
        (
            "toy-diffusion",
            {"guidance": "dynamic", "guidance_options": {"percentile": 2}},
            "guidance_options",
            "percentile",
        ),
        (
            "toy-diffusion",
            {"guidance": "rescale", "guidance_options": {"phi": 0.5, "x": 1}},
            "guidance_options",
            "phi, space",
        ),
        ("toy-ar", {"temperature": 0.0}, "temperature", "temperature must be > 0"),
        ("toy-ar", {"top_p": 1.5}, "top_p", "top_p must be in"),
        ("toy-ar", {"top_k": "4"}, "top_k", "expected int"),
        ("toy-gan", {"cfg_scale": 2.0}, "cfg_scale", "psi"),
    ],
)
def test_values_a_component_refuses_are_request_errors(t2i_manager, recipe, fields, field, needle):
    with pytest.raises(RequestError, match=needle) as info:
        Engine.build(recipe).make_request("x", **fields)
    assert info.value.field == field


def test_out_of_range_node_parameters_are_refused_before_model_work(t2i_manager):
    from t2i.testing import toy_plugin

    with pytest.raises(RequestError, match=r"noise_level.*out of range"):
        Engine.build("toy-cascade").make_request("x", noise_level=-1.0)
    with pytest.raises(RequestError, match="steps"):
        Engine.build("toy-diffusion").make_request("x", steps=10**9)
    assert toy_plugin.CALLS["denoiser"] == 0


def test_empty_schedule_means_automatic_and_runs(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    assert pipe.make_request("x", schedule="").schedule == pipe.make_request("x").schedule
    pipe("x", schedule="", seed=1)


def test_init_image_is_decoded_to_rgb_before_model_work(t2i_manager, tmp_path):
    pipe = Engine.build("toy-diffusion")
    for mode in ("L", "RGBA", "P", "I;16", "F", "CMYK"):
        request = pipe.make_request("x", init_image=Image.new(mode, (8, 8)))
        assert request.init_image.mode == "RGB"
    (tmp_path / "fake.png").write_text("hello")
    with pytest.raises(RequestError, match=r"init_image: .*fake.png: cannot be decoded"):
        pipe.make_request("x", init_image=str(tmp_path / "fake.png"))
    with pytest.raises(RequestError, match="init_image"):
        pipe.make_request("x", init_image=tmp_path / "missing.png")
    assert toy_plugin.CALLS["denoiser"] == 0


def test_component_names_and_options_are_checked_before_any_node_runs(t2i_manager):
    with pytest.raises(EngineError, match="decoder= must be a registered decoder name"):
        Engine.build("toy-diffusion", decoder=5)
    with pytest.raises(EngineError, match="decoder="):
        Engine.build("toy-diffusion", decoder={"options": {}})
    pipe = Engine.build("toy-diffusion", decoder="toy.nope")
    with pytest.raises(UnknownComponentError, match=r"toy\.identity"):
        pipe("x")
    pipe = Engine.build("toy-diffusion", decoder={"name": "toy.identity", "options": {"zz": 1}})
    with pytest.raises(GraphValidationError, match=r"refuses its options.*'zz'") as info:
        pipe("x")
    assert (info.value.node, info.value.port) == ("decoder", "options")
    assert toy_plugin.CALLS["denoiser"] == 0


class _ContentTypeError:
    """A recipe whose factory hits a TypeError that is not about its options."""

    @hookimpl
    def t2i_register_recipes(self, register):
        def broken(*, size: int):
            return len(size)  # TypeError inside: a bug or bad file content, not the options

        register("broken-inside", broken)


def test_build_blames_options_only_for_what_the_call_refused():
    manager = make_manager(toy_plugin, _ContentTypeError())
    with pytest.raises(EngineError, match=r"rejected its options.*missing a required .*size"):
        Engine.build("broken-inside", plugins=manager)
    with pytest.raises(TypeError, match="has no len"):
        Engine.build("broken-inside", plugins=manager, size=3)
