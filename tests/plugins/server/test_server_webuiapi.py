"""The A1111 API through the real ``webuiapi`` client against a live server."""

import base64
import io
import json
import random
import threading
import time

import pytest
import requests
from PIL import Image
from server_live import ldm_manager, live_server

from t2i import Engine
from t2i.infotext import parse_infotext

webuiapi = pytest.importorskip("webuiapi")


@pytest.fixture
def api(toy_server):
    client = webuiapi.WebUIApi(port=toy_server.port, sampler="Euler", steps=4)
    yield client
    client.util_set_model("toy-diffusion")


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_txt2img_matches_the_engine(api, toy_server):
    seed = random.randrange(2**31)
    result = api.txt2img(
        prompt="a red cube", negative_prompt="blue", seed=seed, width=16, height=8, cfg_scale=3
    )
    manager = toy_server.state.manager
    alone = Engine.build("toy-diffusion", plugins=manager)(
        "a red cube",
        negative_prompt="blue",
        seed=seed,
        width=16,
        height=8,
        cfg_scale=3.0,
        steps=4,
        sampler="Euler",
        eta=1.0,  # webuiapi always sends eta=1.0
    )
    assert result.image.size == (16, 8)
    assert result.image.convert("RGB").tobytes() == alone.images[0].tobytes()
    assert result.info["all_seeds"] == [seed]
    assert result.info["infotexts"] == alone.infotexts
    assert result.image.info["parameters"] == alone.infotexts[0]  # the PNG carries it
    assert result.info["sd_model_name"] == "toy-diffusion"
    assert result.parameters["prompt"] == "a red cube"
    params = parse_infotext(result.info["infotexts"][0])
    assert params["Sampler"] == "Euler" and params["Seed"] == str(seed)


def test_batches_and_batch_count(api):
    result = api.txt2img(prompt="x", seed=10, batch_size=2, n_iter=2, width=8, height=8)
    assert result.info["all_seeds"] == [10, 11, 12, 13]
    assert len(result.images) == 4 and len(result.info["infotexts"]) == 4
    assert len({im.tobytes() for im in result.images}) == 4


def test_variation_seeds_across_batches_follow_the_web_ui(api, toy_server):
    """With subseed_strength > 0 every image keeps the seed and image k of the whole run
    gets variation seed subseed + k, across the batches the server runs one by one."""
    fields = dict(seed=10, subseed=40, subseed_strength=0.5, width=8, height=8, steps=3)
    result = api.txt2img(prompt="x", batch_size=2, n_iter=2, sampler_name="Euler", **fields)
    assert result.info["all_seeds"] == [10, 10, 10, 10]
    assert result.info["all_subseeds"] == [40, 41, 42, 43]
    pipe = Engine.build("toy-diffusion", plugins=toy_server.state.manager)
    alone = pipe("x", batch_size=4, sampler="Euler", eta=1.0, **fields)
    assert [im.convert("RGB").tobytes() for im in result.images] == [
        im.tobytes() for im in alone.images
    ]


def test_img2img(api, toy_server):
    init = Image.new("RGB", (16, 16), (200, 30, 30))
    result = api.img2img(images=[init], prompt="a cube", seed=5, denoising_strength=0.5)
    alone = Engine.build("toy-diffusion", plugins=toy_server.state.manager)(
        "a cube",
        init_image=init,
        strength=0.5,
        seed=5,
        steps=4,
        sampler="Euler",
        eta=1.0,
        width=512,
        height=512,  # webuiapi's defaults; the toy img2img keeps the init's size
    )
    assert result.image.convert("RGB").tobytes() == alone.images[0].tobytes()
    assert parse_infotext(result.info["infotexts"][0])["Denoising strength"] == "0.5"
    bad = requests.post(
        f"{toy_server.url}/sdapi/v1/img2img", json={"init_images": ["bm90IGFuIGltYWdl"]}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "init_images"


def test_samplers_schedulers_models_and_settings(api):
    samplers = {s["name"]: s for s in api.get_samplers()}
    assert {"Euler", "Euler a", "DPM++ 2M", "DDIM"} <= set(samplers)
    assert "euler_ancestral" in samplers["Euler a"]["aliases"]
    schedulers = api.get_schedulers()
    assert schedulers[0]["name"] == "automatic"
    assert {"karras", "exponential"} <= {s["name"] for s in schedulers}
    assert {"Karras"} <= {s["label"] for s in schedulers}
    titles = api.util_get_model_names()
    assert {"toy-diffusion", "toy-gan", "toy-autoregressive"} <= set(titles)
    models = {m["title"]: m for m in api.get_sd_models()}
    assert models["toy-gan"]["family"] == "generator"
    assert api.get_options()["sd_model_checkpoint"] == "toy-diffusion"
    assert api.get_cmd_flags()["api"] is True
    assert api.get_loras() == []
    scripts = api.get_scripts()
    assert "x/y/z plot" in scripts["txt2img"] and "prompt matrix" in scripts["txt2img"]
    api.txt2img(prompt="load it", seed=1, width=8, height=8)
    memory = api.get_memory()
    assert memory["ram"]["total"] > memory["ram"]["free"] > 0
    assert memory["ram"]["process"] > 10_000_000
    assert "toy-diffusion" in memory["models"]["loaded"]


def test_switching_models_across_two_families(api, toy_server):
    api.util_set_model("toy-gan")
    assert api.get_options()["sd_model_checkpoint"] == "toy-gan"
    cache = toy_server.state.cache
    pipe = cache.get(cache.loaded()[-1], build=None)  # most recent: the one just selected
    assert pipe.recipe.name == "toy-gan"
    assert pipe.executor.stats["executed"] >= 4  # its weights were loaded by the switch
    gan = api.txt2img(prompt="a cat", seed=3, width=16, height=16)  # CFG 7, Euler: ignored
    assert gan.info["sd_model_name"] == "toy-gan"
    alone = Engine.build("toy-gan", plugins=toy_server.state.manager)("a cat", seed=3)
    assert gan.image.convert("RGB").tobytes() == alone.images[0].tobytes()
    api.util_set_model("toy-diffusion")
    diffusion = api.txt2img(prompt="a cat", seed=3, width=16, height=16)
    assert diffusion.info["sd_model_name"] == "toy-diffusion"
    override = api.txt2img(
        prompt="a cat",
        seed=3,
        width=16,
        height=16,
        override_settings={"sd_model_checkpoint": "toy-gan"},
    )
    assert override.image.tobytes() == gan.image.tobytes()
    assert api.get_options()["sd_model_checkpoint"] == "toy-diffusion"  # only that request
    bad = requests.post(f"{toy_server.url}/sdapi/v1/options", json={"sd_model_checkpoint": "x"})
    assert bad.status_code == 422 and "toy-gan" in bad.json()["detail"]


def test_progress_with_preview_then_interrupt(api, toy_server, slow_toy_steps):
    out = {}
    run = threading.Thread(
        target=lambda: out.update(
            r=api.txt2img(prompt="slow", seed=1, steps=1000, width=32, height=32, n_iter=3)
        )
    )
    run.start()
    progress = wait_for(
        lambda: (
            (p := api.get_progress())["state"]["sampling_step"] >= 3 and p["current_image"] and p
        )
    )
    assert 0 < progress["progress"] < 1 and progress["eta_relative"] > 0
    assert progress["state"]["sampling_steps"] == 1000 and progress["state"]["job_count"] == 1
    preview = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    assert preview.size == (32, 32)
    api.interrupt()
    run.join(timeout=30)
    assert not run.is_alive()
    result = out["r"]
    assert result.images == [] and result.info["interrupted"] is True
    idle = wait_for(lambda: (p := api.get_progress())["state"]["job_count"] == 0 and p)
    assert idle["progress"] == 0 and idle["current_image"] is None
    assert api.txt2img(prompt="next", seed=2, width=8, height=8).image.size == (8, 8)


def test_skip_moves_to_the_next_batch(api, toy_server, slow_toy_steps):
    out = {}
    run = threading.Thread(
        target=lambda: out.update(
            r=api.txt2img(prompt="slow", seed=20, steps=400, width=16, height=16, n_iter=2)
        )
    )
    run.start()
    wait_for(lambda: api.get_progress()["state"]["sampling_step"] >= 2)
    api.skip()
    run.join(timeout=60)
    assert out["r"].info["all_seeds"] == [21]  # batch 0 skipped, batch 1 ran


def test_png_info_and_scripts(api, toy_server):
    result = api.txt2img(prompt="a cube", seed=7, width=8, height=8)
    info = api.png_info(result.image)
    assert info.info == result.info["infotexts"][0]
    assert info.json["parameters"]["Seed"] == "7"
    plot = api.txt2img(
        prompt="a cube",
        seed=7,
        width=8,
        height=8,
        script_name="x/y/z plot",
        script_args=["CFG Scale", "1,3", "Seed", "7-8"],
    )
    assert len(plot.images) == 5 and plot.info["index_of_first_image"] == 1
    assert plot.images[0].size[0] > 2 * 8  # the labelled grid
    assert plot.info["all_seeds"] == [7, 7, 8, 8]
    matrix = api.txt2img(
        prompt="a cube|red", seed=7, width=8, height=8, script_name="prompt matrix"
    )
    assert matrix.info["all_prompts"] == ["a cube", "a cube, red"]
    bad = requests.post(
        f"{toy_server.url}/sdapi/v1/txt2img", json={"script_name": "x/y/z plot", "script_args": [0]}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "script_args"


def test_docs_and_openapi(toy_server):
    assert requests.get(toy_server.url + "/docs").status_code == 200
    spec = requests.get(toy_server.url + "/openapi.json").json()
    assert {"/sdapi/v1/txt2img", "/sdapi/v1/progress", "/t2i/v1/jobs"} <= set(spec["paths"])
    json.dumps(spec)


@pytest.mark.slow
def test_switching_between_ldm_shapes_and_a_gan():
    """A real latent diffusion model and a single-pass toy, on one server."""
    with live_server(ldm_manager(), recipe="toy-gan", max_models=1) as live:
        api = webuiapi.WebUIApi(port=live.port, sampler="DPM++ 2M", steps=6)
        api.util_set_model("ldm-shapes")
        ldm = api.txt2img(prompt="a large red circle", seed=4, width=64, height=64)
        params = parse_infotext(ldm.info["infotexts"][0])
        assert params["Model"] == "ldm-shapes" and params["Model hash"]
        alone = Engine.build("ldm-shapes", plugins=live.state.manager)(
            "a large red circle", seed=4, steps=6, sampler="DPM++ 2M", cfg_scale=7.0, eta=1.0
        )
        assert ldm.image.convert("RGB").tobytes() == alone.images[0].tobytes()
        api.util_set_model("toy-gan")
        assert api.txt2img(prompt="x", seed=1, width=16, height=16).info["sd_model_name"] == (
            "toy-gan"
        )
        assert api.get_memory()["models"]["loaded"] == ["toy-gan"]  # --max-models 1
