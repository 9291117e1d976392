"""A ``t2i`` command line with the toy trainer registered, for subprocess and torchrun tests."""

import pytest

RUNNER = """\
import sys

from t2i.plugins import set_plugin_manager
from t2i.testing import make_manager, toy_training

set_plugin_manager(make_manager(toy_training))  # before the command line mounts its commands
from t2i.cli.main import main

sys.exit(main())
"""


@pytest.fixture
def toy_cli(tmp_path):
    """Path of a script that runs ``t2i ARGS`` with ``t2i train toy`` available."""
    script = tmp_path / "toy_cli.py"
    script.write_text(RUNNER)
    return script
