import threading

import pytest

from t2i import Engine
from t2i.graph import Cancelled, Executor, fingerprint
from t2i.testing import toy_plugin


def test_new_seed_does_not_rerun_tokenizer_or_text_encoder(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    pipe("a red cube", seed=1)
    calls = dict(toy_plugin.CALLS)
    assert calls["tokenizer"] == 2 and calls["text_encoder"] == 2  # prompt + negative
    pipe("a red cube", seed=2)
    assert toy_plugin.CALLS["tokenizer"] == calls["tokenizer"]
    assert toy_plugin.CALLS["text_encoder"] == calls["text_encoder"]
    assert toy_plugin.CALLS["denoiser"] > calls["denoiser"]  # sampling did run again
    pipe("a blue cube", seed=2)  # new prompt: positive branch re-runs, negative stays cached
    assert toy_plugin.CALLS["tokenizer"] == calls["tokenizer"] + 1


def test_same_inputs_fully_cached_and_reproducible(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    a = pipe("x", seed=5)
    before = pipe.executor.stats["executed"]
    b = pipe("x", seed=5)
    assert pipe.executor.stats["executed"] == before
    assert a.images[0].tobytes() == b.images[0].tobytes()


def test_progress_callbacks_per_node_and_step(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    nodes, steps = [], []
    pipe(
        "x",
        seed=1,
        steps=3,
        on_node=lambda n, t, e: nodes.append((n, e)),
        progress=lambda n, s, tot: steps.append((n, s, tot)),
    )
    assert ("sample", "start") in nodes and ("decode", "done") in nodes
    assert steps == [("sample", 1, 3), ("sample", 2, 3), ("sample", 3, 3)]


def test_cancellation_keeps_finished_nodes_and_writes_nothing(t2i_manager, tmp_path):
    pipe = Engine.build("toy-diffusion")
    g = pipe.graph.copy()
    g.add("save", "SaveImage", image=g["decode"]["image"], directory=str(tmp_path))
    ex = Executor(t2i_manager.registry, t2i_manager.registry)
    cancel = threading.Event()

    def on_step(node, step, total):
        if step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        ex.run(
            g,
            params={"sigmas": {"steps": 4}, "sample": {"sampler": "toy.euler"}},
            on_step=on_step,
            cancel=cancel,
        )
    assert list(tmp_path.iterdir()) == []  # the SaveImage never ran, no partial files
    executed = ex.stats["executed"]
    assert executed == 9  # loaders, tokenize, encode (negative == positive: cached), latent,
    # sigmas, guide
    ex.run(g, params={"sigmas": {"steps": 4}, "sample": {"sampler": "toy.euler"}})
    assert ex.stats["cached"] >= 2 + 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t2i-0000.png"]


def test_fingerprint_is_content_based():
    import torch
    from PIL import Image

    t = torch.arange(4.0)
    assert fingerprint({"a": [1, t]}) == fingerprint({"a": [1, t.clone()]})
    assert fingerprint(t) != fingerprint(t + 1)
    im = Image.new("RGB", (4, 4), "red")
    assert fingerprint(im) == fingerprint(im.copy()) != fingerprint(Image.new("RGB", (4, 4)))
