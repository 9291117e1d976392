"""The native job API: recipe or graph jobs, queue, SSE progress, cancel, PNG results, LRU."""

import io
import json
import random
import time

import pytest
import requests
from PIL import Image
from server_live import live_server, toy_manager

from t2i import Engine
from t2i.infotext import parse_infotext


def submit(live, **body):
    response = requests.post(f"{live.url}/t2i/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_done(live, job_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(f"{live.url}/t2i/v1/jobs/{job_id}").json()
        if status["status"] in ("done", "error", "cancelled"):
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


def events(live, job_id):
    """The job's Server-Sent Events as (event, data) pairs, until the stream ends."""
    out, event = [], None
    with requests.get(f"{live.url}/t2i/v1/jobs/{job_id}/events", stream=True, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
    return out


def test_recipe_job_streams_progress_and_returns_pngs(toy_server, slow_toy_steps):
    seed = random.randrange(2**31)
    request = {"seed": seed, "steps": 200, "sampler": "euler", "width": 16, "height": 16}
    job = submit(toy_server, recipe="toy-diffusion", prompt="a cube", request=request)
    stream = events(toy_server, job)
    kinds = [e for e, _ in stream]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"progress"}
    steps = [d["step"] for e, d in stream if e == "progress" and d["status"] == "running"]
    assert len(set(steps)) >= 2 and steps == sorted(steps) and steps[-1] <= 200
    final = stream[-1][1]
    assert final["images"] == 1 and final["seeds"] == [seed] and final["progress"] == 1.0
    png = requests.get(f"{toy_server.url}/t2i/v1/jobs/{job}/images/0.png")
    assert png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.info["parameters"] == final["infotexts"][0]
    alone = Engine.build("toy-diffusion", plugins=toy_server.state.manager)("a cube", **request)
    assert image.convert("RGB").tobytes() == alone.images[0].tobytes()
    assert requests.get(f"{toy_server.url}/t2i/v1/jobs/{job}/images/1.png").status_code == 404


def test_graph_job_runs_the_engines_own_format(toy_server):
    pipe = Engine.build("toy-gan", plugins=toy_server.state.manager)
    graph = pipe.recipe.graph_dict()
    job = submit(toy_server, graph=graph, prompt="a ball", request={"seed": 9})
    status = wait_done(toy_server, job)
    assert status["status"] == "done" and status["model"].startswith("graph:")
    png = requests.get(f"{toy_server.url}/t2i/v1/jobs/{job}/images/0.png").content
    assert Image.open(io.BytesIO(png)).convert("RGB").tobytes() == (
        pipe("a ball", seed=9).images[0].tobytes()
    )
    broken = dict(graph, nodes={"x": {"type": "NoSuchNode"}})
    job = submit(toy_server, graph=broken, prompt="a", request={})
    status = wait_done(toy_server, job)
    assert status["status"] == "error" and status["error"]["detail"]


def test_xyz_job_has_a_grid(toy_server):
    job = submit(
        toy_server,
        recipe="toy-diffusion",
        prompt="a red cube",
        request={"seed": 1},
        xyz=["cfg_scale=1,2", "prompt_sr=red,blue"],
    )
    status = wait_done(toy_server, job)
    assert status["images"] == 4 and status["grid"]
    grid = Image.open(
        io.BytesIO(requests.get(f"{toy_server.url}/t2i/v1/jobs/{job}/grid.png").content)
    )
    assert grid.width > 16 and grid.height == 16 + 2 * 8
    assert [parse_infotext(t)["Prompt"] for t in status["infotexts"]] == [
        "a red cube",
        "a red cube",
        "a blue cube",
        "a blue cube",
    ]


def test_cancel_queued_and_running_jobs(toy_server, slow_toy_steps):
    slow = {"seed": 1, "steps": 1000, "sampler": "euler", "width": 32, "height": 32}
    running = submit(toy_server, recipe="toy-diffusion", prompt="slow", request=slow)
    queued = submit(toy_server, recipe="toy-diffusion", prompt="queued", request=slow)
    deadline = time.monotonic() + 30
    while requests.get(f"{toy_server.url}/t2i/v1/jobs/{running}").json()["step"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    preview = requests.get(f"{toy_server.url}/t2i/v1/jobs/{running}/preview.png")
    assert preview.status_code == 200 and Image.open(io.BytesIO(preview.content)).size == (32, 32)
    assert requests.post(f"{toy_server.url}/t2i/v1/jobs/{queued}/cancel").json()["status"] == (
        "cancelled"
    )
    requests.post(f"{toy_server.url}/t2i/v1/jobs/{running}/cancel")
    status = wait_done(toy_server, running, timeout=10)
    assert status["status"] == "cancelled" and status["step"] < 1000
    after = submit(toy_server, recipe="toy-gan", prompt="next", request={"seed": 2})
    assert wait_done(toy_server, after, timeout=10)["status"] == "done"  # the worker is free
    assert requests.post(f"{toy_server.url}/t2i/v1/jobs/nope/cancel").status_code == 404


def test_bad_jobs_are_refused_naming_the_field(toy_server):
    url = f"{toy_server.url}/t2i/v1/jobs"
    cases = [
        ({"recipe": "nope"}, "recipe"),
        ({"request": {"width": 0}}, "width"),
        ({"request": {"steps": "many"}}, "steps"),
        ({"request": {"init_image": "%%%"}}, "init_image"),
        ({"mode": "dance"}, "mode"),
        ({"xyz": ["steps"]}, "xyz"),
        ({"unknown": 1}, "unknown"),
        ({"recipe": "toy-gan", "graph": {}}, "graph"),
        ({"recipe": "toy-gan", "options": {"allow_pickle": True}}, "allow_pickle"),
        ({"graph": {"nodes": {"a": {"params": {"allow_pickle": 1}}}}}, "allow_pickle"),
    ]
    for body, field in cases:
        response = requests.post(url, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field, (body, response.json())
    # a field only the model can check fails the job, naming it
    job = submit(toy_server, recipe="toy-diffusion", prompt="a", request={"top_k": 3})
    status = wait_done(toy_server, job)
    assert status["status"] == "error" and status["error"]["field"] == "top_k"


def test_recipes_describe_fields_per_family(toy_server):
    data = requests.get(f"{toy_server.url}/t2i/v1/recipes").json()
    recipes = {r["name"]: r for r in data["recipes"]}
    assert data["current"] == "toy-diffusion"
    assert recipes["toy-diffusion"]["family"] == "diffusion" and recipes["toy-diffusion"]["img2img"]
    assert "steps" in recipes["toy-diffusion"]["fields"]
    assert (
        recipes["toy-gan"]["family"] == "generator" and "steps" not in recipes["toy-gan"]["fields"]
    )
    assert "top_k" in recipes["toy-autoregressive"]["fields"]
    parsed = requests.post(
        f"{toy_server.url}/t2i/v1/infotext", json={"text": "a\nSteps: 3, Seed: 4, Size: 8x16"}
    ).json()["parameters"]
    assert parsed["Size-2"] == "16" and parsed["Prompt"] == "a"


def test_model_cache_unloads_least_recently_used():
    with live_server(toy_manager(), recipe="toy-gan", max_models=2) as live:
        for recipe in ("toy-gan", "toy-diffusion", "toy-gan", "toy-autoregressive"):
            wait_done(live, submit(live, recipe=recipe, prompt="a", request={"seed": 1}))
        memory = requests.get(f"{live.url}/sdapi/v1/memory").json()["models"]
        assert memory["loaded"] == ["toy-gan", "toy-autoregressive"]  # toy-diffusion was LRU
        assert memory["loads"] == 3 and memory["unloads"] == 1
        wait_done(live, submit(live, recipe="toy-diffusion", prompt="a", request={"seed": 1}))
        memory = requests.get(f"{live.url}/sdapi/v1/memory").json()["models"]
        assert memory["loaded"] == ["toy-autoregressive", "toy-diffusion"]


def test_model_cache_limit_is_checked():
    from t2i_server.cache import ModelCache

    with pytest.raises(ValueError, match="max_models"):
        ModelCache(0)
