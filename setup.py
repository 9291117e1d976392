"""Maps the import packages onto their folders: ``t2i`` <- core/, ``t2i_kernels`` <- kernels/."""

from setuptools import find_packages, setup

ROOTS = {"t2i": "core", "t2i_kernels": "kernels"}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages.extend(f"{name}.{sub}" for sub in find_packages(folder))

setup(packages=packages, package_dir=ROOTS)
