"""``benchmarks/sdxl_full_size.py --tiny`` runs on CPU and writes its one JSON line (the
full-size run is the GPU's: BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "sdxl_full_size.py"


def test_tiny_run_writes_one_json_line(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("sdxl_full_size", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("OUT", str(tmp_path))
    module.main(["--tiny", "--skip-timing"])
    line = (tmp_path / "sdxl_full_size.json").read_text()
    result = json.loads(line)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["config"] == "tiny" and result["half_finite"]
    assert result["fp32_l2_rel_err_auto"] < 1e-4 and result["fp32_max_rel_err_ref"] < 1e-4
    assert result["half_l2_rel_err_t2i_vs_fp32"] < 0.05
    assert {"step_ms_t2i", "step_ms_diffusers"}.isdisjoint(result)  # --skip-timing
    assert module.SDXL_BASE["projection_class_embeddings_input_dim"] == 1280 + 6 * 256
