"""Recorded training compute, weights size and the peak-memory probe."""

from __future__ import annotations

import json

import numpy as np
import pytest

from t2i.compare.measure import (
    MemoryProbe,
    file_bytes,
    training_compute,
    weights_path,
)
from t2i.compare.scores import per_prompt_figures
from t2i.shapes.evaluate import evaluate, prompt_set
from t2i.shapes.oracle import oracle_images


def test_training_compute_sums_the_run_records(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({
        "config": {"steps": "not a run"},
        "training": {"runs": [
            {"steps": 100, "batch_size": 8, "minutes": 2.0, "device": "cuda"},
            {"steps": 10, "batch_size": 4, "minutes": 1.0, "device": "cpu"},
            {"steps": 5, "batch_size": 2, "gpus": 2, "seconds": 30, "device": "cuda:0"},
        ]},
        "stages": {"sr": {"training": {"images_seen": 50, "gpu_seconds": 7.5}}},
    }))  # fmt: skip
    (tmp_path / "notes.json").write_text("{not json")
    t = training_compute(tmp_path)
    assert t.images_seen == 800 + 40 + 10 + 50
    assert t.gpu_seconds == pytest.approx(120 + 60 + 7.5)
    assert t.cpu_seconds == pytest.approx(60)
    assert (t.runs, t.untimed_runs, t.sources) == (4, 0, ["model.json"])


def test_training_compute_counts_the_runs_an_init_continued(tmp_path):
    first = {"steps": 4, "batch_size": 2, "minutes": 1.0, "device": "cuda"}
    second = {"steps": 3, "batch_size": 2, "minutes": 0.5, "device": "cuda",
              "init": {"folder": "run1", "steps": 4, "training": first}}  # fmt: skip
    (tmp_path / "model.json").write_text(json.dumps({"training": second}))
    t = training_compute(tmp_path)
    assert (t.runs, t.images_seen, t.gpu_seconds) == (2, 14, pytest.approx(90.0))


def test_training_compute_unknown_when_not_recorded(tmp_path):
    (tmp_path / "dalle.json").write_text(json.dumps({"training": {"prior": {
        "steps": 3, "batch_size": 2}}}))  # fmt: skip
    t = training_compute(tmp_path)
    assert (t.gpu_seconds, t.images_seen, t.untimed_runs) == (None, 6, 1)
    assert training_compute(None).images_seen is None


def test_weights_path_is_the_checkpoint_or_the_packages_weights_folder(tmp_path):
    ckpt = tmp_path / "w.safetensors"
    ckpt.write_bytes(b"x" * 10)
    assert weights_path("r", object(), str(ckpt)) == ckpt and file_bytes(ckpt) == 10
    assert weights_path("toy-shapes", lambda: None, None) is None  # no weights folder
    (tmp_path / "model.json").write_text("{}")
    assert file_bytes(tmp_path) == 10 and file_bytes(None) is None  # the weight files only
    (ckpt).unlink()
    assert file_bytes(tmp_path) == 2  # no weight file: every file


def test_memory_probe_on_cpu_sees_an_allocation():
    probe = MemoryProbe("cpu")
    probe.start()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    peak = probe.peak_bytes()
    del block
    assert "peak RSS growth" in probe.method
    assert peak is not None and peak >= 32 * 2**20


def test_per_prompt_figures_agree_with_the_evaluation():
    prompts = prompt_set(4)

    def half_wrong(prompt, seeds):  # prompt 0 drawn as prompt 1's scene: misaligned
        text = prompts[1].text if prompt == prompts[0].text else prompt
        return oracle_images(text, seeds)

    report, _ = evaluate(half_wrong, prompts, [0, 1], progress=False)
    table = per_prompt_figures(report, prompts)
    assert np.mean(table["overall"]) == pytest.approx(report.alignment["overall"])
    assert table["overall"][0] == 0.0 and table["overall"][1:] == [1.0, 1.0, 1.0]
    assert np.isnan(table["pair"][0]) and np.isnan(table["single"][1])
    assert table["count"][0] == 0.0 and np.isnan(table["relation"][0])
    assert table["relation"][1] == 1.0
