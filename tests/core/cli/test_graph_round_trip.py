"""``t2i graph show --format json`` then ``t2i run`` is ``t2i generate``, pixel for pixel."""

import json

from click.testing import CliRunner
from PIL import Image

from t2i.cli.main import cli
from t2i.outputs import read_infotext


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _export(tmp_path, recipe, *extra):
    out = invoke("graph", "show", recipe, "--format", "json", *extra)
    assert out.exit_code == 0, out.output
    path = tmp_path / f"{recipe}.json"
    path.write_text(out.output)
    return path, json.loads(out.output)


def test_the_json_carries_bindings_defaults_name_output_and_version(t2i_manager, tmp_path):
    _, data = _export(tmp_path, "toy-diffusion")
    meta = data["meta"]
    assert meta["format"] == "t2i-graph" and meta["format_version"] == 2
    assert meta["name"] == "toy-diffusion" and meta["output"] == ["decode", "image"]
    assert meta["bindings"]["seed"] == [["empty_latent", "seed"]]
    assert meta["defaults"]["steps"] == 4 and meta["size_multiple"] == 1


def test_run_reproduces_generate_pixel_for_pixel(t2i_manager, tmp_path):
    for recipe in ("toy-diffusion", "toy-cascade", "toy-ar"):
        graph, _ = _export(tmp_path, recipe)
        a, b = tmp_path / f"{recipe}-a.png", tmp_path / f"{recipe}-b.png"
        common = ["--seed", 7, "--negative", "blur", "--cfg", 2.0]
        gen = invoke("generate", "a red cube", "--recipe", recipe, *common, "-o", a)
        assert gen.exit_code == 0, gen.output
        ran = invoke("run", graph, "--prompt", "a red cube", *common, "-o", b)
        assert ran.exit_code == 0, ran.output
        assert Image.open(a).tobytes() == Image.open(b).tobytes(), recipe
        assert read_infotext(a) == read_infotext(b), recipe
        other = invoke(
            "run", graph, "--prompt", "a red cube", "--seed", 8, "-o", tmp_path / "c.png"
        )
        assert other.exit_code == 0
        assert Image.open(tmp_path / "c.png").tobytes() != Image.open(b).tobytes()
        (tmp_path / "c.png").unlink()


def test_an_img2img_graph_takes_an_init_image_and_says_so_without_one(t2i_manager, tmp_path):
    graph, data = _export(tmp_path, "toy-diffusion", "--img2img")
    assert data["meta"]["img2img"] is True
    init = tmp_path / "init.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(init)
    ok = invoke(
        "run",
        graph,
        "--prompt",
        "x",
        "--init-image",
        init,
        "--strength",
        0.5,
        "-o",
        tmp_path / "i.png",
    )
    assert ok.exit_code == 0, ok.output
    missing = invoke("run", graph, "--prompt", "x", "-o", tmp_path / "j.png")
    assert missing.exit_code == 2 and "--init-image" in missing.output


def test_batch_count_saves_each_batch_as_it_finishes(t2i_manager, tmp_path, monkeypatch):
    from t2i.testing import toy_plugin

    calls = {"n": 0}
    original = toy_plugin.TinyGenerator.forward

    def interrupted_on_the_third(self, z, cond):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, z, cond)

    monkeypatch.setattr(toy_plugin.TinyGenerator, "forward", interrupted_on_the_third)
    out = invoke(
        "generate",
        "x",
        "--recipe",
        "toy-gan",
        "--batch-count",
        4,
        "--batch-size",
        2,
        "--seed",
        10,
        "-o",
        tmp_path / "runs",
    )
    assert out.exit_code == 130  # interrupted in the third batch
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == ["00000-10.png", "00001-11.png", "00002-12.png", "00003-13.png"]
