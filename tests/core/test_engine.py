import pytest
from PIL import Image

from t2i import Engine
from t2i.engine import EngineError
from t2i.infotext import parse_infotext
from t2i.registry import UnknownComponentError
from t2i.request import RequestError
from t2i.testing import toy_plugin


@pytest.mark.parametrize(
    "recipe", ["toy-diffusion", "toy-autoregressive", "toy-gan", "toy-cascade"]
)
def test_three_generation_shapes_run_through_one_engine(t2i_manager, recipe):
    pipe = Engine.build(recipe)
    result = pipe("a red cube", seed=11, batch_size=2)
    assert len(result.images) == 2 and result.seeds == [11, 12]
    assert all(isinstance(im, Image.Image) for im in result.images)
    again = pipe("a red cube", seed=12, batch_size=1)  # image i of a batch uses seed + i
    assert again.images[0].tobytes() == result.images[1].tobytes()


def test_autoregressive_loop_carries_kv_cache(t2i_manager):
    toy_plugin.CACHE_LENGTHS.clear()
    Engine.build("toy-ar")("x", seed=1, width=8, height=8)
    assert toy_plugin.CACHE_LENGTHS == [1, 2, 3, 4]  # 2x2 tokens, one new token per call
    assert toy_plugin.CALLS["transformer"] == 4


def test_single_pass_calls_generator_once(t2i_manager):
    Engine.build("toy-gan")("x", seed=1, batch_size=3)
    assert toy_plugin.CALLS["generator"] == 1


def test_metadata_is_complete(t2i_manager):
    result = Engine.build("toy-diffusion")("a cube", negative_prompt="blur", seed=3, steps=2)
    meta = result.metadata
    assert meta["recipe"] == "toy-diffusion" and meta["seeds"] == [3]
    assert meta["parameters"]["steps"] == 2 and meta["parameters"]["negative_prompt"] == "blur"
    assert meta["components"]["denoiser"] == "toy.denoiser"
    assert "t2i.testing.toy_plugin" in meta["plugins"]
    assert meta["sampler_label"] == "Toy Euler"


def test_png_carries_a1111_infotext(t2i_manager, tmp_path):
    result = Engine.build("toy-diffusion")(
        "a (red:1.2) cube, shiny", negative_prompt="blurry", seed=42, steps=3, batch_size=2
    )
    paths = result.save(tmp_path / "out.png")
    assert [p.name for p in paths] == ["out-0000.png", "out-0001.png"]
    info = Image.open(paths[1]).text["parameters"]
    parsed = parse_infotext(info)
    assert parsed["Prompt"] == "a (red:1.2) cube, shiny"
    assert parsed["Negative prompt"] == "blurry"
    assert parsed["Seed"] == "43" and parsed["Steps"] == "3" and parsed["Size-1"] == "8"
    assert parsed["Sampler"] == "Toy Euler"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("steps", 0, "steps"),
        ("strength", 1.5, "strength"),
        ("cfg_scale", -1.0, "cfg_scale"),
        ("batch_size", 0, "batch_size"),
        ("seed", -2, "seed"),
        ("noise_device", "tpu", "noise_device"),
    ],
)
def test_bad_request_fields_name_the_field(t2i_manager, field, value, needle):
    pipe = Engine.build("toy-diffusion")
    with pytest.raises((RequestError, ValueError, TypeError)) as err:
        pipe("x", **{field: value})
    assert needle in str(err.value)
    assert toy_plugin.CALLS["denoiser"] == 0  # rejected before any model work


def test_unknown_sampler_lists_available(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    with pytest.raises(UnknownComponentError, match=r"toy\.euler"):
        pipe("x", sampler="eulr")
    with pytest.raises(UnknownComponentError):
        Engine.build("toy-diffusion", sampler="nope")


def test_size_multiple_and_unknown_field(t2i_manager):
    with pytest.raises(RequestError, match="multiple of 4"):
        Engine.build("toy-ar")("x", width=10)
    with pytest.raises(RequestError, match="unknown field"):
        Engine.build("toy-ar")("x", clip_skip=2)


def test_overrides_defaults_swaps_and_errors(t2i_manager):
    pipe = Engine.build("toy-diffusion", steps=2, decoder="toy.identity")
    assert pipe.defaults["steps"] == 2
    assert pipe("x", seed=1).metadata["parameters"]["steps"] == 2
    with pytest.raises(EngineError, match="unknown override 'colour'"):
        Engine.build("toy-diffusion", colour="red")
    with pytest.raises(UnknownComponentError, match="toy-gan"):
        Engine.build("toy-ga")


def test_img2img_uses_init_image(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    init = Image.new("RGB", (8, 8), (255, 0, 0))
    out = pipe("x", seed=1, init_image=init, strength=0.5)
    assert out.metadata["parameters"]["init_image"] == "<image>"


def test_from_graph_round_trip(t2i_manager, tmp_path):
    pipe = Engine.build("toy-gan")
    data = pipe.graph.to_dict()
    data["meta"] = {
        "bindings": {"seed": ["empty", "seed"]},
        "defaults": {
            "width": 16,
            "height": 16,
            "sampler": "single_pass",
            "guidance": "truncation",
        },
    }
    path = tmp_path / "g.json"
    import json

    path.write_text(json.dumps(data))
    a = Engine.from_graph(path)(None, seed=4)
    b = pipe("", seed=4)
    assert a.images[0].tobytes() == b.images[0].tobytes()
