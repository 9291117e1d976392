import json

from click.testing import CliRunner
from PIL import Image

from t2i.cli.main import cli
from t2i.infotext import parse_infotext


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_plugins_components_recipes(t2i_manager):
    out = invoke("plugins")
    assert out.exit_code == 0 and "t2i.testing.toy_plugin" in out.output and "loaded" in out.output
    out = invoke("components", "--kind", "sampler")
    assert "toy.euler" in out.output and "decoder" not in out.output
    out = invoke("recipes")
    assert "toy-gan" in out.output and "toy-ar" in out.output


def test_graph_show_formats(t2i_manager):
    assert "sample = SampleDiffusion(" in invoke("graph", "show", "toy-diffusion").output
    assert invoke("graph", "show", "toy-gan", "--format", "mermaid").output.startswith("flowchart")
    data = json.loads(invoke("graph", "show", "toy-ar", "--format", "json").output)
    assert data["nodes"]["encode_positive"]["inputs"]["tokens"] == ["tokenize_positive", "tokens"]


def test_generate_writes_png_with_parameters(t2i_manager, tmp_path):
    target = tmp_path / "img.png"
    out = invoke(
        "generate",
        "a cube",
        "--recipe",
        "toy-diffusion",
        "-o",
        str(target),
        "--seed",
        "9",
        "--steps",
        "2",
        "--negative",
        "ugly",
        "--batch-size",
        "2",
    )
    assert out.exit_code == 0, out.output
    files = sorted(tmp_path.glob("img-*.png"))
    assert len(files) == 2
    info = parse_infotext(Image.open(files[0]).text["parameters"])
    assert info["Seed"] == "9" and info["Negative prompt"] == "ugly"


def test_exit_codes(t2i_manager, tmp_path):
    out = invoke(
        "generate",
        "x",
        "--recipe",
        "toy-diffusion",
        "--sampler",
        "eulr",
        "-o",
        str(tmp_path / "a.png"),
    )
    assert out.exit_code == 2 and "did you mean" in out.output
    out = invoke("generate", "x", "--recipe", "toy-diffusion", "--steps", "0")
    assert out.exit_code == 2 and "steps" in out.output
    out = invoke("generate", "x", "--recipe", "nope")
    assert out.exit_code == 2 and "unknown recipe" in out.output
    out = invoke("generate", "x")  # no default recipe in the toy set-up
    assert out.exit_code == 2 and "no default recipe" in out.output
    out = invoke("generate")
    assert out.exit_code == 2  # usage error: missing PROMPT


def test_failure_exit_code_is_1(t2i_manager, tmp_path, monkeypatch):
    from t2i.testing import toy_plugin

    def explode(self, x, sigma, cond):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(toy_plugin.ToyDenoiser, "forward", explode)
    out = invoke("generate", "x", "--recipe", "toy-diffusion", "-o", str(tmp_path / "a.png"))
    assert out.exit_code == 1 and "model exploded" in out.output
    assert not list(tmp_path.iterdir())


def test_run_graph_json(t2i_manager, tmp_path):
    from t2i import Engine

    g = Engine.build("toy-gan").graph
    path = tmp_path / "g.json"
    path.write_text(g.to_json())
    out = invoke("run", str(path), "-o", str(tmp_path / "out"))
    assert out.exit_code == 0, out.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_json_logs(t2i_manager, tmp_path):
    out = CliRunner().invoke(
        cli,
        [
            "--log-format",
            "json",
            "--log-level",
            "info",
            "generate",
            "x",
            "--recipe",
            "toy-gan",
            "-o",
            str(tmp_path / "a.png"),
        ],
    )
    assert out.exit_code == 0
