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


def test_token_sampler_previews_the_partial_grid_every_row(t2i_manager):
    from t2i.contracts import UNDRAWN

    pipe = Engine.build("toy-autoregressive")
    seen = []
    seed = random.randrange(2**31)
    result = pipe(
        "a cat",
        seed=seed,
        batch_size=2,
        preview=lambda node, step, total, grid: seen.append((node, step, total, grid.clone())),
    )
    *_, last = seen[-1]
    b, _, h, w = last.shape
    assert b == 2 and [s for _, s, _, _ in seen] == [w * (r + 1) for r in range(h)]
    assert all(t == h * w and g.shape == last.shape and g.dtype == torch.long for *_, t, g in seen)
    for _, step, _, grid in seen:  # drawn so far, then UNDRAWN; what is drawn never changes
        flat = grid.flatten(1)
        assert (flat[:, step:] == UNDRAWN).all() and (flat[:, :step] >= 0).all()
        assert torch.equal(flat[:, :step], last.flatten(1)[:, :step])
    decoder = pipe.executor.run(pipe.recipe.graph, outputs=["decoder"])["decoder"]["decoder"]
    from t2i.payloads import Latent

    assert decoder.decode(Latent(last)).to_pil()[0].tobytes() == result.images[0].tobytes()


def test_single_pass_previews_once_with_the_finished_sample(t2i_manager):
    pipe = Engine.build("toy-gan")
    seen, progress = [], []
    pipe(
        "a cat",
        seed=1,
        batch_size=2,
        preview=lambda node, step, total, x: seen.append((node, step, total, tuple(x.shape))),
        progress=lambda n, s, t: progress.append((s, t)),
    )
    assert [(s, t) for _, s, t, _ in seen] == [(1, 1)] and progress == [(1, 1)]
    assert seen[0][3][0] == 2
