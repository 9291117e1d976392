"""The X/Y/Z plot: A1111's range syntax, cells equal to single runs, labelled grids, CLI."""

import json
import random

import pytest
from click.testing import CliRunner
from PIL import Image

from t2i import Engine
from t2i.cli.main import cli
from t2i.infotext import parse_infotext
from t2i.request import RequestError
from t2i.xyz import MAX_CELLS, Axis, XYZError, parse_values, xyz_plot

# A1111's wiki ("Features", X/Y/Z plot) documents these expansions.
DOCUMENTED = [
    ("1-5", int, [1, 2, 3, 4, 5]),
    ("1-5 (+2)", int, [1, 3, 5]),
    ("10-5 (-3)", int, [10, 7]),
    ("1-3 (+0.5)", float, [1.0, 1.5, 2.0, 2.5, 3.0]),
    ("1-10 [5]", int, [1, 3, 5, 7, 10]),
    ("0.0-1.0 [6]", float, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    ("1-3, 7, 10-8 (-1)", int, [1, 2, 3, 7, 10, 9, 8]),
    ("3,5,7", float, [3.0, 5.0, 7.0]),
]


@pytest.mark.parametrize(("text", "kind", "expected"), DOCUMENTED)
def test_range_syntax_matches_the_web_ui(text, kind, expected):
    got = parse_values(text, kind)
    assert got == pytest.approx(expected)
    assert all(type(v) is kind for v in got)


def test_random_int_ranges_agree_with_python_range():
    rng = random.Random()
    for _ in range(50):
        a, b = rng.randint(-50, 50), rng.randint(-50, 50)
        step = rng.randint(1, 7) * (1 if b >= a else -1)
        text = f"{a}-{b} ({step:+d})"
        assert parse_values(text, int) == list(range(a, b + (1 if step > 0 else -1), step)), text


def test_axis_names_and_values():
    assert Axis.parse("CFG Scale=3-7 (+2)") == Axis("cfg_scale", (3.0, 5.0, 7.0))
    assert Axis.parse("sampler=Euler, DPM++ 2M").values == ("Euler", "DPM++ 2M")
    assert Axis.parse("size=64x64, 32x48").values == ((64, 64), (32, 48))
    assert Axis.parse('Prompt S/R=red,"blue, green"').values == ("red", "blue, green")
    assert Axis.parse("denoising=0.25-0.75 [3]") == Axis("strength", (0.25, 0.5, 0.75))
    for bad in ("cfg_scale", "steps=a,b", "size=64by64", "steps=1-5 (+0)", "seed="):
        with pytest.raises(XYZError, match=r"axis|FIELD=VALUES"):
            Axis.parse(bad)


def test_cells_equal_single_runs_and_the_grid_is_labelled(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    seed = random.randrange(2**31)
    axes = ["cfg_scale=1,4", "steps=2-3", "sampler=euler,heun"]
    plot = xyz_plot(pipe, "a cat", axes, seed=seed, guidance="cfg")
    result = plot.result
    assert len(result.images) == 8 and result.seeds == [seed] * 8
    i = 0
    for sampler in ("euler", "heun"):
        for steps in (2, 3):
            for cfg in (1.0, 4.0):
                alone = pipe(
                    "a cat", seed=seed, cfg_scale=cfg, steps=steps, sampler=sampler, guidance="cfg"
                )
                assert result.images[i].tobytes() == alone.images[0].tobytes()
                assert result.infotexts[i] == alone.infotexts[0]
                i += 1
    assert len({im.tobytes() for im in result.images}) == 8
    w, h = result.images[0].size
    assert len(plot.grids) == 2
    grid = plot.grids[0]
    left = grid.width - 2 * w
    assert left > 0 and grid.height == 16 + 2 * h
    assert grid.crop((left + w, 16 + h, left + 2 * w, 16 + 2 * h)).tobytes() == (
        result.images[3].tobytes()
    )
    assert plot.grid.width == 2 * grid.width + 8  # two Z grids side by side
    labels = grid.crop((left, 0, grid.width, 16)).convert("L")
    assert min(labels.getdata()) < 128  # text was drawn over the white label strip


def test_size_prompt_sr_and_recipe_axes(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    plot = xyz_plot(pipe, "a red cube", ["size=8x8,16x8", "prompt_sr=red,blue"], seed=3)
    assert [im.size for im in plot.result.images] == [(8, 8), (16, 8), (8, 8), (16, 8)]
    assert plot.result.prompts == ["a red cube", "a red cube", "a blue cube", "a blue cube"]
    assert plot.grid.size[1] == 16 + 16
    plot = xyz_plot(pipe, "x", ["recipe=toy-diffusion,toy-gan"], seed=4)
    models = [parse_infotext(t)["Model"] for t in plot.result.infotexts]
    assert models == ["toy-diffusion", "toy-gan"]
    gan = Engine.build("toy-gan")("x", seed=4)
    assert plot.result.images[1].tobytes() == gan.images[0].tobytes()


def test_random_seed_is_drawn_once(t2i_manager):
    pipe = Engine.build("toy-gan")
    plot = xyz_plot(pipe, "x", ["cfg_scale=0.5,1"], seed=-1)
    assert plot.result.seeds[0] == plot.result.seeds[1] != -1


def test_bad_axes_fail_before_any_image(t2i_manager):
    pipe = Engine.build("toy-diffusion")
    calls = []
    with pytest.raises(XYZError, match="twice"):
        xyz_plot(pipe, "x", ["steps=1,2", "steps=3"], on_cell=lambda *a: calls.append(a))
    with pytest.raises(XYZError, match="not in the prompt"):
        xyz_plot(pipe, "a cat", ["prompt_sr=dog,cow"])
    with pytest.raises(XYZError, match="limit"):
        xyz_plot(pipe, "x", [f"seed=1-{MAX_CELLS + 1}"])
    with pytest.raises(XYZError, match="1 to 3"):
        xyz_plot(pipe, "x", ["seed=1", "steps=1", "cfg=1", "eta=0"])
    with pytest.raises(RequestError, match="steps"):  # the last cell is out of range
        xyz_plot(pipe, "x", ["steps=2,0"], on_cell=lambda *a: calls.append(a))
    assert calls == []


def test_cli_generate_xyz_writes_cells_and_grid(t2i_manager, tmp_path):
    out = CliRunner().invoke(
        cli,
        [
            "generate",
            "a cat",
            "--recipe",
            "toy-diffusion",
            "--seed",
            "9",
            "--xyz",
            "cfg_scale=1,3",
            "--xyz",
            "sampler=Euler,Heun",
            "-o",
            str(tmp_path / "plot"),
        ],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    paths = out.stdout.split()
    assert len(paths) == 5 and paths[-1].endswith("grid.png")
    cells = [Image.open(p) for p in paths[:4]]
    assert [parse_infotext(c.info["parameters"])["Sampler"] for c in cells] == [
        "Euler",
        "Euler",
        "Heun",
        "Heun",
    ]
    grid = Image.open(paths[-1])
    assert grid.height == 16 + 2 * cells[0].height
    bad = CliRunner().invoke(
        cli, ["generate", "x", "--recipe", "toy-diffusion", "--xyz", "steps=a", "-o", "y"]
    )
    assert bad.exit_code == 2 and "axis" in bad.output
    json.dumps(out.output)


def test_a_vae_axis_picks_one_pipeline_per_file_labelled_by_name(t2i_manager):
    """``vae`` is a pipeline axis, as ``checkpoint``: ``pipeline_for("vae", value)`` once per
    value (the ldm family builds it with ``vae=``), grid labels by file name."""
    pipe = Engine.build("toy-diffusion")
    asked = []

    def pipeline_for(kind, value):
        asked.append((kind, value))
        return pipe

    axis = Axis.parse("VAE=Automatic,/vaes/a.safetensors")
    assert axis == Axis("vae", ("Automatic", "/vaes/a.safetensors"))
    assert axis.label("/vaes/a.safetensors") == "VAE: a.safetensors"
    plot = xyz_plot(pipe, "x", [axis, "seed=1,2"], pipeline_for=pipeline_for, steps=2)
    assert asked == [("vae", "Automatic"), ("vae", "/vaes/a.safetensors")]
    assert len(plot.result.images) == 4
    with pytest.raises(XYZError, match="one of recipe, checkpoint and vae"):
        xyz_plot(pipe, "x", ["vae=a", "checkpoint=b"], pipeline_for=pipeline_for)
