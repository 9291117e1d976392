"""A real third-party plugin distribution, pip-installed into a temporary virtualenv.

The example plugin uses the toy components, so the venv also loads the toy plugin
through an entry point of a tiny shim distribution written here. No network: the
venv sees the system site-packages (torch, t2i) and builds with them.
"""

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _see_this_environment(env_dir) -> None:
    """Let the new venv import what this interpreter has (t2i, a recent setuptools), also
    when the tests themselves run in a venv: its system site is then the base Python's."""
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    site_dir = env_dir / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    line = "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in sorted(paths))
    (site_dir / "site-packages" / "_t2i_test_parent_env.pth").write_text(line + "\n")


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "env"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    _see_this_environment(env_dir)
    shim = root / "toy_shim"
    (shim / "t2i_toy_shim").mkdir(parents=True)
    (shim / "t2i_toy_shim" / "__init__.py").write_text("from t2i.testing.toy_plugin import *\n")
    (shim / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "t2i-toy-shim"
        version = "0.0.1"
        [project.entry-points.t2i]
        toy = "t2i_toy_shim"
        [tool.setuptools]
        packages = ["t2i_toy_shim"]
    """)
    )
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(py),
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        str(FIXTURES / "t2i_example_plugin"),
        str(FIXTURES / "t2i_broken_plugin"),
        str(shim),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("T2I_")}
    env["T2I_LOAD_PLUGINS"] = "example,broken,toy"
    return py, env


def run(py, env, *args):
    code = "import sys; from t2i.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [str(py), "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_installed_plugin_recipe_is_listed_and_broken_one_reported(plugin_venv):
    py, env = plugin_venv
    out = run(py, env, "recipes")
    assert out.returncode == 0, out.stderr
    assert "example-gradient" in out.stdout
    plugins = run(py, env, "plugins", "--json")
    records = {r["name"]: r for r in json.loads(plugins.stdout)}
    assert records["example"]["status"] == "loaded" and records["example"]["version"] == "1.2.3"
    assert records["broken"]["status"] == "failed"
    assert "definitely_missing_dependency" in records["broken"]["error"]


def test_installed_plugin_runs_through_engine(plugin_venv, tmp_path):
    py, env = plugin_venv
    code = textwrap.dedent(f"""
        from t2i import Engine
        r = Engine.build("example-gradient")("a gradient", seed=3)
        r.save({str(tmp_path / "g.png")!r})
        print(r.metadata["plugins"])
    """)
    out = subprocess.run(
        [str(py), "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "'example': '1.2.3'" in out.stdout
    assert (tmp_path / "g.png").exists()


def test_strict_mode_makes_broken_plugin_fatal(plugin_venv):
    py, env = plugin_venv
    out = run(py, {**env, "T2I_STRICT_PLUGINS": "1"}, "plugins")
    assert out.returncode == 1 and "broken" in out.stderr
