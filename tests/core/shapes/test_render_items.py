"""``render_items``: the parallel render every family's trainer reads the benchmark through."""

import numpy as np
import torch

from t2i.shapes.dataset import make_sample, render_items


def test_items_are_make_sample_whatever_the_worker_count():
    n, seed = 7, int(torch.randint(200, ()))
    one, captions = render_items(n, 32, seed=seed, pair_fraction=0.5, workers=1)
    two, captions_two = render_items(n, 32, seed=seed, pair_fraction=0.5, workers=2)
    assert one.dtype == torch.uint8 and one.shape == (n, 3, 32, 32)
    assert torch.equal(one, two) and captions == captions_two
    for i in (0, n - 1):
        s = make_sample("train", i, 32, seed, pair_fraction=0.5)
        assert captions[i] == s.caption.text
        assert np.array_equal(one[i].permute(1, 2, 0).numpy(), np.asarray(s.image.convert("RGB")))
