"""Training data of the ldm trainer: rendered benchmark scenes and exported folders."""

import click
import pytest
from click.testing import CliRunner

from t2i.shapes.captions import parse_caption
from t2i.shapes.dataset import export_folder
from t2i_ldm.shapes_data import load_folder, render_shapes
from t2i_ldm.train import train_command


def test_pair_fraction_sets_the_share_of_two_object_scenes():
    for fraction, kind in ((1.0, "pair"), (0.0, "single")):
        images, captions = render_shapes(6, 32, workers=1, progress=False, pair_fraction=fraction)
        assert images.shape == (6, 3, 32, 32)
        assert {parse_caption(c).kind for c in captions} == {kind}
    result = CliRunner().invoke(train_command, ["--out", "x", "--pair-fraction", "1.5"])
    assert result.exit_code == 2 and "--pair-fraction" in result.output


def test_folder_round_trip(tmp_path):
    export_folder(tmp_path / "data", n=5, size=32, progress=False)
    images, captions = load_folder(tmp_path / "data")
    assert images.shape == (5, 3, 32, 32) and len(captions) == 5
    with pytest.raises(click.UsageError, match=r"captions\.jsonl"):
        load_folder(tmp_path)
