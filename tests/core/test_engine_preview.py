"""Live previews: a diffusion sampler hands every step's x0 prediction to ``preview``."""

import random

import torch

from t2i import Engine


def test_preview_receives_each_steps_prediction(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    steps, seen, progress = random.randint(2, 6), [], []

    def preview(node, step, total, x0):
        seen.append((node, step, total, tuple(x0.shape), x0.clone()))

    seed = random.randrange(2**31)
    result = pipe(
        "a cat",
        seed=seed,
        steps=steps,
        sampler="euler",
        batch_size=2,
        preview=preview,
        progress=lambda n, s, t: progress.append((n, s, t)),
    )
    assert [(n, s, t) for n, s, t, _, _ in seen] == [("sample", i, steps) for i in range(1, 9)][
        :steps
    ]
    assert progress == [(n, s, t) for n, s, t, _, _ in seen]
    assert all(shape == (2, 3, 8, 8) for *_, shape, _ in seen)
    assert not torch.equal(seen[0][4], seen[-1][4])  # the prediction changes as it samples
    plain = Engine.build("toy-diffusion")(
        "a cat", seed=seed, steps=steps, sampler="euler", batch_size=2
    )
    assert [im.tobytes() for im in plain.images] == [im.tobytes() for im in result.images]
