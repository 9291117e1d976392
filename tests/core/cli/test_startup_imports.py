"""What the ``t2i`` command imports before it does any work (issue 23.5), with every installed
plugin discovered, as a user's shell runs it: listing and usage errors import no model
library, and ``t2i generate`` on the default model (``ldm-shapes``) imports, up to its first
model call, only what that model runs on (torch, safetensors, tokenizers). A regression test of
imports, not of seconds: ``benchmarks/startup.py`` measures the time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

MODEL_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "sympy", "triton",
                   "onnx", "onnxruntime", "peft", "diffusers", "accelerate", "open_clip",
                   "fastapi", "uvicorn")  # fmt: skip
"""Top-level packages of model libraries (and the server's stack) that cost start-up time."""
NOT_FOR_LDM_SHAPES = ("transformers", "sympy", "triton", "onnx", "onnxruntime", "peft",
                      "diffusers", "accelerate", "open_clip", "fastapi", "uvicorn",
                      "torch._dynamo", "torch.distributed.tensor",
                      "torch.fx.experimental.symbolic_shapes",
                      "rich", "pygments")  # fmt: skip  # (structlog's rich tracebacks: t2i.logs)

RUN = """
import json, sys
def dump():
    print("MODULES", json.dumps(sorted(sys.modules)), flush=True)
args = json.loads(sys.argv[1])
if args[0] == "generate" and len(args) > 1:  # stop at the first model call, as the benchmark
    import t2i.graph.nodes as nodes
    def stop(self, ctx, **values):
        dump()
        raise SystemExit(0)
    nodes.EncodeText.execute = stop
from t2i.cli.main import main
main(args)
dump()
"""


def imported_by(args: list[str], tmp_path) -> set[str]:
    """The modules loaded by ``t2i ARGS`` in a fresh interpreter (all installed plugins)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("T2I_")}
    env["T2I_STRICT_PLUGINS"] = "1"  # a plugin that fails to load fails here, not hides
    out = subprocess.run(
        [sys.executable, "-c", RUN, json.dumps(args)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    lines = [x for x in out.stdout.splitlines() if x.startswith("MODULES ")]
    assert lines, out.stdout[-2000:] + out.stderr[-3000:]
    return set(json.loads(lines[0][len("MODULES ") :]))


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


@pytest.mark.parametrize("args", [["--help"], ["recipes"], ["generate"]], ids=str)
def test_listing_and_usage_errors_import_no_model_library(args, tmp_path):
    loaded = imported_by(args, tmp_path)
    assert "t2i_ldm.plugin" in loaded  # the installed plugins were discovered
    assert sorted(_top(loaded) & set(MODEL_LIBRARIES)) == []


def test_generate_on_the_default_model_imports_only_what_it_runs_on(tmp_path):
    pytest.importorskip("t2i_ldm")
    args = ["generate", "a large green circle in the center", "--seed", "3", "-o", "out.png"]
    loaded = imported_by(args, tmp_path)
    assert "t2i_ldm.clip_text" in loaded  # it got as far as building the text encoder
    assert {"torch", "safetensors", "tokenizers"} <= _top(loaded)
    unneeded = {m for m in NOT_FOR_LDM_SHAPES if m in loaded or m in _top(loaded)}
    assert sorted(unneeded) == []
