"""Live previews: the recipe's decoder on the sampler's x0, else a cheap latent view."""

import random

import torch
from t2i_server.images import latent_preview
from t2i_server.jobs import decoded_preview

from t2i import Engine


def test_decoded_preview_of_the_last_step_is_the_image(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    seen = []
    seed = random.randrange(2**31)
    result = pipe(
        "a cube",
        seed=seed,
        steps=5,
        sampler="euler",
        width=16,
        height=8,
        preview=lambda node, step, total, x0: seen.append((node, x0.clone())),
    )
    node, x0 = seen[-1]  # Euler's last step lands on its x0 prediction (sigma_next = 0)
    image = decoded_preview(pipe, node, x0[:1])
    assert image.size == (16, 8)
    assert image.tobytes() == result.images[0].tobytes()
    assert decoded_preview(pipe, "no-such-node", x0[:1]) is None


def test_cheap_preview_stretches_each_channel():
    x0 = torch.randn(2, 4, 8, 6) * 5
    image = latent_preview(x0, (12, 16))
    assert image.size == (12, 16) and image.mode == "RGB"
    small = latent_preview(x0)
    assert small.size == (6, 8)
    for c, (lo, hi) in enumerate(small.getextrema()):
        assert (lo, hi) == (0, 255), c  # min-max per channel
    grey = latent_preview(torch.randn(1, 1, 4, 4))
    r, g, b = grey.split()
    assert r.tobytes() == g.tobytes() == b.tobytes()


def test_progress_shows_a_dalle_jobs_partial_grid(tmp_path):
    """A slow DALL-E job (many batches): /progress's current_image is the decoded partial
    token grid at the request's size, the steps are tokens."""
    import base64
    import io
    import threading
    import time

    import pytest
    import requests
    from PIL import Image
    from server_live import live_server
    from server_models import tiny_dalle_folder

    from t2i.testing import make_manager, toy_plugin

    dalle = pytest.importorskip("t2i_dalle.plugin")
    tiny_dalle_folder(tmp_path / "models" / "tiny-dalle")
    manager = make_manager(toy_plugin, dalle)
    with live_server(manager, recipe="tiny-dalle", models_dir=tmp_path / "models") as live:
        body = {"prompt": "a red cube", "seed": 1, "n_iter": 500}
        done = {}
        thread = threading.Thread(
            target=lambda: done.update(
                r=requests.post(f"{live.url}/sdapi/v1/txt2img", json=body, timeout=300)
            )
        )
        thread.start()
        deadline, progress = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            p = requests.get(f"{live.url}/sdapi/v1/progress", timeout=30).json()
            if p["current_image"] and p["state"]["sampling_steps"]:
                progress = p
                break
            time.sleep(0.02)
        requests.post(f"{live.url}/sdapi/v1/interrupt", timeout=30)
        thread.join(timeout=120)
    assert progress is not None, "no preview during the job"
    assert progress["state"]["sampling_steps"] == 256  # one step per token of the 16x16 grid
    preview = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    assert preview.size == (64, 64)
    assert done["r"].status_code == 200


def test_gan_preview_is_the_finished_image(t2i_manager):
    pipe = Engine.build("toy-gan")
    seen = []
    result = pipe("a cube", seed=3, preview=lambda node, step, total, x: seen.append((node, x)))
    [(node, x)] = seen
    assert decoded_preview(pipe, node, x[:1]).tobytes() == result.images[0].tobytes()
