"""Under load and faults: concurrent mixed requests, bad input, huge bodies, disconnects."""

import base64
import io
import json
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image
from server_live import live_server, toy_manager

from t2i import Engine
from t2i.infotext import parse_infotext

RECIPES = ("toy-diffusion", "toy-gan")
SIZES = ((8, 8), (16, 8), (16, 16))


def txt2img(url, **body):
    return requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120)


def decode(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


@pytest.mark.slow
def test_concurrent_mixed_requests_match_a_serial_run():
    """8 client threads, 40 requests over two families and three sizes, while another
    thread keeps switching the selected model: none lost, each on its own model, each image
    identical to a serial run with the same seed."""
    rng = random.Random()
    jobs = [
        {
            "recipe": rng.choice(RECIPES),
            "size": rng.choice(SIZES),
            "seed": rng.randrange(2**31),
            "prompt": rng.choice(["a cube", "two balls", "a red star"]),
        }
        for _ in range(40)
    ]
    with live_server(toy_manager(), recipe="toy-gan", max_models=1) as live:
        stop = threading.Event()

        def flip():
            while not stop.is_set():
                for name in RECIPES:
                    requests.post(
                        f"{live.url}/sdapi/v1/options", json={"sd_model_checkpoint": name}
                    )

        def one(job):
            w, h = job["size"]
            response = txt2img(
                live.url,
                prompt=job["prompt"],
                seed=job["seed"],
                width=w,
                height=h,
                steps=3,
                sampler_name="Euler",
                override_settings={"sd_model_checkpoint": job["recipe"]},
            )
            assert response.status_code == 200, response.text
            return response.json()

        flipper = threading.Thread(target=flip)
        flipper.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(one, jobs))
        finally:
            stop.set()
            flipper.join()
        manager = live.state.manager
    pipes = {name: Engine.build(name, plugins=manager) for name in RECIPES}
    assert len(answers) == 40
    for job, answer in zip(jobs, answers):
        info = json.loads(answer["info"])
        assert info["sd_model_name"] == job["recipe"]
        assert parse_infotext(info["infotexts"][0])["Model"] == job["recipe"]
        w, h = job["size"]
        fields = {"seed": job["seed"], "width": w, "height": h}
        if job["recipe"] == "toy-diffusion":
            fields.update(steps=3, sampler="Euler", cfg_scale=7.0)
        alone = pipes[job["recipe"]](job["prompt"], **fields)
        assert decode(answer["images"][0]).tobytes() == alone.images[0].tobytes(), job
        assert info["infotexts"] == alone.infotexts


BAD_BODIES = [
    ({"width": 100000}, "width"),
    ({"height": 0}, "height"),
    ({"batch_size": 100000}, "batch_size"),
    ({"steps": 0}, "steps"),
    ({"cfg_scale": -1}, "cfg_scale"),
    ({"steps": "many"}, "steps"),
    ({"seed": [1]}, "seed"),
    ({"prompt": 5}, "prompt"),
    ({"n_iter": "x"}, "n_iter"),
    ({"override_settings": {"sd_model_checkpoint": "no-such"}}, "sd_model_checkpoint"),
    ({"script_name": "loopback"}, "script_name"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_fields_get_a_4xx_naming_the_field(toy_server, body, field):
    response = txt2img(toy_server.url, **{"prompt": "x", **body})
    assert 400 <= response.status_code < 500, response.text
    answer = response.json()
    assert answer["field"] == field and field in answer["detail"], answer


def test_malformed_bodies_and_images(toy_server):
    url = f"{toy_server.url}/sdapi/v1"
    response = requests.post(
        f"{url}/txt2img", data=b'{"prompt": "x",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["field"] == "body"
    assert "JSON" in response.json()["detail"]
    for image, problem in (("%%%not base64", "base64"), ("aGVsbG8gd29ybGQ=", "not an image")):
        response = requests.post(f"{url}/img2img", json={"init_images": [image]})
        assert response.status_code == 422 and response.json()["field"] == "init_images"
        assert problem in response.json()["detail"]
        response = requests.post(f"{url}/png-info", json={"image": image})
        assert response.status_code == 422 and response.json()["field"] == "image"
    response = requests.post(f"{url}/txt2img", json={"prompt": "x", "sampler_name": "Nope 3000"})
    assert response.status_code == 422 and "Nope 3000" in response.json()["detail"]
    assert txt2img(toy_server.url, prompt="still serving", width=8, height=8).status_code == 200


def test_a_50_mb_body_is_refused_and_the_server_goes_on(toy_server):
    url = f"{toy_server.url}/sdapi/v1/img2img"
    big = b'{"init_images": ["' + b"A" * (50 * 1024 * 1024) + b'"]}'
    response = requests.post(url, data=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["field"] == "body"

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"init_images": ["'
        for _ in range(50):
            yield b"A" * (1024 * 1024)
        yield b'"]}'

    response = requests.post(url, data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert txt2img(toy_server.url, prompt="after", width=8, height=8).status_code == 200


def test_client_disconnect_mid_run_does_not_kill_the_worker(toy_server, slow_toy_steps):
    worker = toy_server.state.worker
    done_before = worker.completed
    body = json.dumps(
        {"prompt": "gone", "seed": 1, "steps": 150, "width": 16, "height": 16}
    ).encode()
    with socket.create_connection(("127.0.0.1", toy_server.port)) as sock:
        sock.sendall(
            b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 30
        while worker.current is None or worker.current.step < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    deadline = time.monotonic() + 60
    while worker.completed == done_before:  # the job runs to its end
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = worker.jobs()[-1]
    assert job.prompt == "gone" and job.status == "done" and len(job.images) == 1
    assert txt2img(toy_server.url, prompt="next", width=8, height=8).status_code == 200
