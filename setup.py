"""Maps the import packages onto folders: ``t2i`` <- core/, ``t2i_kernels`` <- kernels/t2i_kernels/.

The kernels sit one level down so that the repository root never offers a top-level ``kernels``
package: that name belongs to Hugging Face's ``kernels`` distribution, which transformers >= 5.25
requires and imports; a ``kernels/__init__.py`` here shadowed it whenever the root was on
``sys.path`` (``python -m pytest``, ``python -c`` in a clone).
"""

from setuptools import find_packages, setup

ROOTS = {"t2i": "core", "t2i_kernels": "kernels/t2i_kernels"}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages.extend(f"{name}.{sub}" for sub in find_packages(folder))

setup(packages=packages, package_dir=ROOTS)
