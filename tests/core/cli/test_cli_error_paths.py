"""The README's exit-code contract, walked: every command's bad input exits 2 with one line
that names the problem (no traceback), and writes nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from t2i.cli.main import cli, hoist_global_options

G = ("generate", "a cat", "--recipe", "toy-diffusion")

CASES: dict[str, tuple[tuple[str, ...], str]] = {
    "unknown recipe": (("generate", "x", "--recipe", "nope"), "unknown recipe 'nope'"),
    "unknown sampler": ((*G, "--sampler", "eulr"), "did you mean"),
    "zero steps": ((*G, "--steps", "0"), "steps"),
    "zero width": ((*G, "--width", "0"), "width"),
    "huge batch": ((*G, "--batch-size", "-1"), "batch"),
    "cfg not a number": ((*G, "--cfg-scale", "lots"), "cfg"),
    "strength out of range": ((*G, "--strength", "2"), "strength"),
    "device that is no device": ((*G, "--device", "gpu"), "not a device name"),
    "missing init image": ((*G, "--init-image", "{tmp}/none.png"), "none.png"),
    "init image not an image": ((*G, "--init-image", "{tmp}/junk.png"), "junk.png"),
    "bad xyz axis": ((*G, "--xyz", "flavour=1,2"), "flavour"),
    "option without value": ((*G, "--option", "novalue"), "novalue"),
    "run a missing graph": (("run", "{tmp}/missing.json", "--prompt", "x"), "missing.json"),
    "run malformed JSON": (("run", "{tmp}/junk.png", "--prompt", "x"), "junk.png"),
    "graph of unknown recipe": (("graph", "show", "nope"), "unknown recipe 'nope'"),
    "graph format": (("graph", "show", "toy-diffusion", "--format", "xml"), "xml"),
    "components of unknown kind": (("components", "flavour"), "flavour"),
    "unknown trainer": (("train", "nope"), "nope"),
    "eval of unknown recipe": (("eval", "nope", "--out", "{tmp}/eval"), "nope"),
}


@pytest.fixture
def tmp(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not a png, not json")
    return tmp_path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line(t2i_manager, tmp, case):
    args, words = CASES[case]
    before = sorted(p.name for p in tmp.iterdir())
    out = CliRunner().invoke(cli, [a.format(tmp=tmp) for a in args], catch_exceptions=False)
    assert out.exit_code == 2, (case, out.output)
    assert "Traceback" not in out.output
    errors = [line for line in out.output.splitlines() if "rror" in line]
    assert errors, out.output
    assert words.lower() in out.output.lower(), (case, out.output)
    assert sorted(p.name for p in tmp.iterdir()) == before  # nothing written


def test_log_format_works_after_the_subcommand(t2i_manager):
    out = CliRunner().invoke(cli, ["generate", "x", "--recipe", "nope", "--log-format", "json"])
    assert out.exit_code == 2
    event = json.loads(out.output.strip().splitlines()[-1])
    assert event["exit_code"] == 2 and "unknown recipe 'nope'" in event["message"]


def test_hoisting_keeps_prompts_and_what_follows_a_double_dash():
    args = ["generate", "--log-level=info", "a cat", "--log-format", "json", "--", "--log-level"]
    assert hoist_global_options(args) == [
        "--log-level=info",
        "--log-format",
        "json",
        "generate",
        "a cat",
        "--",
        "--log-level",
    ]
