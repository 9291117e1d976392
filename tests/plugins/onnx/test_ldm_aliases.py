"""The ``ldm`` recipe's aliases (``sd``, ``stable-diffusion``) under the ONNX runtime: given to
``Engine.build(alias, runtime="onnx", onnx_dir=DIR)`` or ``t2i generate --runtime onnx
--recipe sd --onnx-dir DIR`` they name the manifest's recipe (``ldm``) and give the torch
runtime's image; another recipe is refused naming both."""

import pytest
from click.testing import CliRunner
from onnx_checks import pixel_distance
from PIL import Image
from t2i_onnx.manifest import OnnxExportError

from t2i.engine import Engine

pytest.importorskip("t2i_ldm", reason="the LDM plugin is not installed (-e plugins/t2i_ldm)")

import test_ldm

manager = test_ldm.manager  # the LDM and ONNX plugins as the process-wide manager (autouse)
tiny_sd1 = test_ldm.tiny_sd1  # a random tiny single-file SD1 checkpoint and its tokenizer

FIELDS = {"seed": 4, "steps": 2, "width": 16, "height": 16}
PROMPT = "a red cube"


@pytest.fixture(scope="module")
def sd1_export(tiny_sd1, tmp_path_factory):
    from t2i_onnx.exporter import export_recipe

    out = tmp_path_factory.mktemp("sd1-alias") / "export"
    manifest = export_recipe("sd", out, options=tiny_sd1)
    assert manifest["recipe"]["name"] == "ldm"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("alias", ["sd", "stable-diffusion", "Stable-Diffusion"])
def test_an_alias_builds_the_exported_recipe(sd1_export, tiny_sd1, alias):
    pipe = Engine.build(alias, runtime="onnx", onnx_dir=sd1_export)
    assert pipe.recipe.name == "ldm" and pipe.onnx_torch_built == []
    expected = Engine.build("ldm", **tiny_sd1)(PROMPT, **FIELDS)
    got = pipe(PROMPT, **FIELDS)
    assert pixel_distance(got.images, expected.images) <= 2
    assert got.infotexts == expected.infotexts


@pytest.mark.slow
def test_another_recipe_is_refused_naming_both(sd1_export):
    with pytest.raises(OnnxExportError, match="export of recipe 'ldm', not 'ldm-shapes'"):
        Engine.build("ldm-shapes", runtime="onnx", onnx_dir=sd1_export)


@pytest.mark.slow
def test_generate_command_with_an_alias(sd1_export, tiny_sd1, tmp_path):
    from t2i.cli.main import cli

    args = ["generate", PROMPT, "--steps", "2", "--seed", "4", "--width", "16", "--height", "16"]
    runner = CliRunner()
    onnx = runner.invoke(
        cli,
        [*args, "--runtime", "onnx", "--recipe", "sd", "--onnx-dir", str(sd1_export),
         "-o", str(tmp_path / "o")],
    )  # fmt: skip
    assert onnx.exit_code == 0, onnx.output
    (path,) = sorted((tmp_path / "o").glob("*.png"))
    expected = Engine.build("ldm", **tiny_sd1)(PROMPT, **FIELDS)
    assert pixel_distance([Image.open(path).convert("RGB")], expected.images) <= 2
    refused = runner.invoke(
        cli, [*args, "--recipe", "ldm-shapes", "--onnx-dir", str(sd1_export), "-o", str(tmp_path)]
    )
    assert refused.exit_code != 0
    assert "export of recipe 'ldm', not 'ldm-shapes'" in refused.output + str(refused.exception)
