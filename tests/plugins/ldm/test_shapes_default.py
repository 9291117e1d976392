"""The embedded default model: the README's main command writes a PNG the judge reads right."""

import re
import shlex
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from t2i.cli.main import cli
from t2i.plugins import set_plugin_manager
from t2i.shapes.captions import parse_caption
from t2i.shapes.judge import load_judge
from t2i.shapes.metrics import attribute_matches
from t2i.testing import make_manager
from t2i_ldm import plugin
from t2i_ldm.shapes_model import WEIGHTS_DIR

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_main_command() -> list[str]:
    text = README.read_text()
    line = re.search(r"<!-- main-command -->\s*```bash\s*\n(.+)\n", text).group(1)
    generate = line.split("&&")[-1].strip()
    args = shlex.split(generate)
    assert args[:2] == ["t2i", "generate"], generate
    return args[2:]


def test_shipped_files_are_small_safetensors():
    files = sorted(WEIGHTS_DIR.glob("*.safetensors"))
    assert {f.name for f in files} == {
        "unet.safetensors",
        "vae.safetensors",
        "text_encoder.safetensors",
    }
    assert all(f.stat().st_size < 16 * 2**20 for f in files)


def test_readme_main_command_image_is_read_correctly(tmp_path):
    args = readme_main_command()
    out = tmp_path / "out.png"
    args[args.index("-o") + 1] = str(out)
    set_plugin_manager(make_manager(plugin))
    try:
        result = CliRunner().invoke(cli, ["generate", *args], catch_exceptions=False)
    finally:
        set_plugin_manager(None)
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    assert "Model: ldm-shapes" in image.text["parameters"]
    read = load_judge().read([image])[0]
    stated = parse_caption(args[0])
    assert all(attribute_matches(stated, read).values()), (args[0], read)
