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
