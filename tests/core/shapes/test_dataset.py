import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.utils.data import DataLoader

from t2i.cli.shapes import data
from t2i.shapes.captions import parse_caption
from t2i.shapes.dataset import ShapesDataset, collate_shapes
from t2i.shapes.scene import Scene
from t2i.shapes.splits import SPLIT_SEED_BASE, is_heldout, sample_scene, scene_seed, split_of_seed


def test_items_are_deterministic_per_index_and_well_formed():
    ds = ShapesDataset("train", size=32, length=50, seed=3)
    i = int(np.random.default_rng().integers(50))
    (x1, c1, r1), (x2, c2, r2) = ds[i], ShapesDataset("train", 32, 50, 3)[i]
    assert torch.equal(x1, x2) and c1 == c2 and r1 == r2
    assert x1.shape == (3, 32, 32) and x1.dtype == torch.float32
    assert 0.0 <= float(x1.min()) and float(x1.max()) <= 1.0
    assert parse_caption(c1).to_dict() == {k: r1[k] for k in ("kind", "objects", "relation",
                                                              "background")}  # fmt: skip
    assert Scene.from_dict(r1["scene"]).kind == r1["kind"]
    other_seed = ShapesDataset("train", 32, 50, 4)[i]
    assert not torch.equal(x1, other_seed[0])


def test_dataloader_batches_with_collate():
    loader = DataLoader(ShapesDataset("val", 32, 8), batch_size=4, collate_fn=collate_shapes)
    images, captions, records = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and len(captions) == 4 and len(records) == 4


def test_split_seed_ranges_are_disjoint():
    top = scene_seed("train", 2**32 - 1, 199)
    assert (
        top < SPLIT_SEED_BASE["val"] and scene_seed("val", 2**32 - 1, 199) < SPLIT_SEED_BASE["test"]
    )
    for split in ("train", "val", "test"):
        assert split_of_seed(scene_seed(split, 12345, 7)) == split
    with pytest.raises(ValueError, match="seed"):
        scene_seed("train", 0, 500)
    with pytest.raises(ValueError, match="split"):
        ShapesDataset("validation")


def test_heldout_combinations_appear_only_in_test():
    rng = np.random.default_rng()
    for split in ("train", "val"):
        assert not any(is_heldout(sample_scene(rng, split)) for _ in range(1500))
    test = [sample_scene(rng, "test") for _ in range(600)]
    share = np.mean([is_heldout(s) for s in test])
    assert 0.35 < share < 0.65  # half the test scenes use held-out combinations
    kinds = {s.kind for s in test if is_heldout(s)}
    assert kinds == {"single", "pair"}


def test_export_command_writes_pngs_and_jsonl(tmp_path):
    out = tmp_path / "shapes"
    result = CliRunner().invoke(
        data, ["shapes", "--out", str(out), "--n", "6", "--size", "32", "--split", "test"]
    )
    assert result.exit_code == 0, result.output
    pngs = sorted(out.glob("*.png"))
    lines = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(pngs) == 6 and len(lines) == 6
    assert {line["file"] for line in lines} == {p.name for p in pngs}
    ds = ShapesDataset("test", 32, 6)
    for line in lines:
        idx = int(line["file"][:6])
        assert Image.open(out / line["file"]).size == (32, 32)
        assert line["caption"] == ds[idx][1]
        assert parse_caption(line["caption"]).to_dict() == line["attributes"]
        assert line["split"] == "test"


def test_export_command_rejects_bad_size(tmp_path):
    result = CliRunner().invoke(data, ["shapes", "--out", str(tmp_path), "--size", "48"])
    assert result.exit_code != 0 and "48" in result.output
