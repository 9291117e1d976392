"""``t2i graph show ldm-shapes --checkpoint DIR --format json`` then ``t2i run`` equals
``t2i generate`` on the embedded model, pixel for pixel; recipe options come from
``--option``."""

import pytest
from click.testing import CliRunner
from PIL import Image

from t2i.cli.main import cli
from t2i.plugins import set_plugin_manager
from t2i.testing import make_manager
from t2i_ldm import plugin
from t2i_ldm.shapes_model import WEIGHTS_DIR


@pytest.fixture(autouse=True)
def manager():
    previous = set_plugin_manager(make_manager(plugin))
    yield
    set_plugin_manager(previous)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_graph_json_of_a_checkpoint_runs_as_generate_does(tmp_path):
    shown = invoke("graph", "show", "ldm-shapes", "--checkpoint", WEIGHTS_DIR, "--format", "json")
    assert shown.exit_code == 0, shown.output
    graph = tmp_path / "g.json"
    graph.write_text(shown.output)
    args = ["--seed", 4, "--steps", 3]
    a = invoke(
        "generate", "a small red star", "--checkpoint", WEIGHTS_DIR, *args, "-o", tmp_path / "a.png"
    )
    b = invoke("run", graph, "--prompt", "a small red star", *args, "-o", tmp_path / "b.png")
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    assert Image.open(tmp_path / "a.png").tobytes() == Image.open(tmp_path / "b.png").tobytes()


def test_an_unknown_recipe_option_is_a_usage_error():
    out = invoke("graph", "show", "ldm-shapes", "--option", "colour=red")
    assert out.exit_code == 2 and "colour" in out.output
    out = invoke("graph", "show", "ldm-shapes", "--option", "oops")
    assert out.exit_code == 2 and "KEY=VALUE" in out.output
