"""Discovering the LDM plugin imports no model library: its components register by path."""

import subprocess
import sys


def test_listing_the_ldm_plugin_imports_neither_torch_nor_transformers():
    code = (
        "import sys; from t2i.plugins import get_plugin_manager; m = get_plugin_manager(); "
        "r = m.records['ldm']; assert r.status == 'loaded', r.error; "
        "assert 'ldm-shapes' in m.registry.names('recipe'); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    env = {"T2I_LOAD_PLUGINS": "ldm", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
