"""The repository root must not shadow an installed distribution's import name.

Tests run with the root on ``sys.path`` (``python -m pytest``), so a folder with an
``__init__.py`` (or a ``.py`` file) at the root wins over site-packages. A ``kernels/__init__.py``
here once shadowed Hugging Face's ``kernels`` package, which transformers >= 5.25 imports, and
every MiniLM load in CI failed with "cannot import name 'CUDAProperties' from 'kernels'".
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


SCRIPT_FOLDERS = ("benchmarks",)
"""Folders whose scripts run as ``python benchmarks/x.py``: the folder is then ``sys.path[0]``,
so its modules shadow installed ones too (``benchmarks/kernels.py`` hid ``kernels``)."""


def _root_import_names() -> set[str]:
    names = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    names |= {p.stem for p in ROOT.glob("*.py")}
    for folder in SCRIPT_FOLDERS:
        names |= {p.stem for p in (ROOT / folder).glob("*.py")}
    return names


def test_no_root_folder_shadows_an_installed_package() -> None:
    installed = importlib.metadata.packages_distributions()
    ours = {"t2i", "t2i_kernels", "setup"}
    clashes = {name: installed[name] for name in _root_import_names() - ours if name in installed}
    assert not clashes, (
        f"repository-root import names shadow installed distributions: {clashes}; "
        "rename the script, or move the folder's sources one level down (as kernels/t2i_kernels/)"
    )


def test_the_kernels_name_resolves_to_the_installed_distribution_if_any() -> None:
    import importlib.util

    spec = importlib.util.find_spec("kernels")
    if spec is not None and spec.origin is not None:
        assert not Path(spec.origin).resolve().is_relative_to(ROOT), spec.origin
