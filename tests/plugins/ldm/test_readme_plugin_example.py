"""The README's "Writing a plugin" example is real: it registers and runs on ldm-shapes."""

import re
import types
from pathlib import Path

from t2i import Engine
from t2i.testing import make_manager
from t2i_ldm import plugin

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_plugin_example_runs():
    section = README.read_text().split("## Writing a plugin", 1)[1]
    code = re.search(r"```python\n(.+?)```", section, re.S).group(1)
    module = types.ModuleType("readme_plugin")
    exec(compile(code, "<README plugin example>", "exec"), module.__dict__)
    manager = make_manager(plugin, module)
    assert manager.registry.get("decoder", "my.sepia").plugin == "readme_plugin"
    image = Engine.build("ldm-sepia", plugins=manager)("a red circle", steps=2, seed=1).images[0]
    assert image.size == (64, 64)
    r, g, b = image.getpixel((32, 32))
    assert r >= g >= b  # sepia: the decoder's channel ratios 1 : 0.8 : 0.6
