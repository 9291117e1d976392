import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from t2i.shapes.dataset import ShapesDataset
from t2i.shapes.judge import (
    DEFAULT_WEIGHTS,
    HEADS,
    JudgeWeightsError,
    ShapesJudge,
    load_judge,
    prepare,
    save_judge,
    scene_targets,
)
from t2i.shapes.metrics import prompt_alignment


@pytest.fixture(scope="module")
def judge():
    return load_judge()


def test_shipped_weights_are_small_and_carry_their_config():
    assert DEFAULT_WEIGHTS.stat().st_size <= 5 * 2**20
    with safe_open(str(DEFAULT_WEIGHTS), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"])["input_size"] == 64
    assert json.loads(meta["heads"]) == {k: list(v) for k, v in HEADS.items()}


@pytest.mark.parametrize("size", [32, 64, 128])
def test_judge_reads_fresh_test_renders(judge, size):
    # Fresh items of the test split (held-out combinations included), never seen in training.
    seed = int(np.random.default_rng().integers(150))
    ds = ShapesDataset("test", size=size, length=96, seed=seed)
    items = [ds.sample(i) for i in range(len(ds))]
    read = judge.read([it.image for it in items])
    truth = [it.scene for it in items]
    assert prompt_alignment(truth, read)["overall"] >= 0.97
    stated = [it.caption.stated for it in items]
    assert prompt_alignment(stated, read)["overall"] >= 0.97


def test_prepare_accepts_pil_uint8_and_float_and_resizes():
    ds = ShapesDataset("val", size=32, length=2)
    pil = ds.sample(0).image
    x = ds[0][0]
    a, b = prepare(pil), prepare(x)
    c = prepare((x * 255).round().to(torch.uint8))
    assert a.shape == (1, 3, 64, 64)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(b, c, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        prepare(torch.zeros(2, 1, 64, 64))


def test_save_load_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    model = ShapesJudge(width=8, feature_dim=16).eval()
    path = tmp_path / "j.safetensors"
    save_judge(model, path)
    loaded = load_judge(path)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        ref, got = model(x), loaded(x)
    for name in HEADS:  # float16 storage
        assert torch.allclose(ref[name], got[name], atol=5e-2), name
    with pytest.raises(JudgeWeightsError, match="train_judge"):
        load_judge(tmp_path / "missing.safetensors")


def test_targets_cover_every_head_for_the_scene_kind():
    ds = ShapesDataset("train", 32, 4)
    for i in range(4):
        t = scene_targets(ds.sample(i).scene)
        assert set(t) == set(HEADS)
        assert t["count"] in (0, 1) and t["background"] >= 0


def test_judge_reads_degraded_renders(judge):
    from t2i.shapes.augment import DEGRADATIONS

    ds = ShapesDataset("test", size=64, length=64, seed=int(np.random.default_rng().integers(150)))
    items = [ds.sample(i) for i in range(len(ds))]
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    g = torch.Generator().manual_seed(0)
    for name in ("blur1.0", "noise0.05", "lowres32"):
        read = judge.read(DEGRADATIONS[name](x, g))
        assert prompt_alignment([it.scene for it in items], read)["overall"] >= 0.95, name
