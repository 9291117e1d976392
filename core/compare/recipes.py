"""Which recipes ``t2i compare`` runs: asked of the registry, so a third party's family is in.

A recipe has a *shapes default* when its plugin marked it as an embedded default
(``register(..., default=True)``) or its name ends in ``-shapes``, the project's name for a
family's small model trained on the shapes benchmark (``ldm-shapes``, ``gan-shapes`` ...).
The benchmark's own ceiling, ``shapes-oracle`` (plugin ``shapes``), is left out unless named.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from t2i.registry.manager import PluginManager
from t2i.registry.registrar import ComponentEntry

ORACLE_PLUGIN = "shapes"


class RecipeChoiceError(ValueError):
    """A recipe argument names no recipe or is malformed; the message says the fix."""


@attrs.frozen
class RecipeSpec:
    """One recipe to compare, with the checkpoint it is built with (None: its default)."""

    name: str
    checkpoint: str | None = None


def is_shapes_default(entry: ComponentEntry) -> bool:
    """Whether ``entry`` (a recipe) is a family's shapes default (see the module docstring)."""
    if entry.plugin == ORACLE_PLUGIN:
        return False
    return bool(entry.default) or entry.name.endswith("-shapes")


def default_recipes(manager: PluginManager) -> list[str]:
    """Every installed recipe with a shapes default, in registry order."""
    return [e.name for e in manager.registry.entries("recipe") if is_shapes_default(e)]


def _split(arg: str, what: str) -> tuple[str, str | None]:
    name, sep, path = arg.partition("=")
    if not name or (sep and not path):
        raise RecipeChoiceError(f"{what} {arg!r}: write RECIPE or RECIPE=PATH")
    return name, (path or None)


def resolve_recipes(
    manager: PluginManager, recipes: Sequence[str], checkpoints: Sequence[str] = ()
) -> list[RecipeSpec]:
    """The recipes to run: ``recipes`` (``NAME`` or ``NAME=PATH``), else the defaults; each
    ``checkpoints`` entry ``NAME=PATH`` gives a recipe its weights (and adds it if absent)."""
    specs: dict[str, str | None] = {}
    for arg in recipes:
        name, path = _split(arg, "recipe")
        specs[_canonical(manager, name)] = path
    if not recipes:
        specs = dict.fromkeys(default_recipes(manager))
    for arg in checkpoints:
        name, path = _split(arg, "--checkpoint")
        if path is None:
            raise RecipeChoiceError(f"--checkpoint {arg!r}: write RECIPE=PATH")
        specs[_canonical(manager, name)] = path
    if not specs:
        raise RecipeChoiceError("no installed recipe has a shapes default: name recipes to run")
    return [RecipeSpec(n, p) for n, p in specs.items()]


def _canonical(manager: PluginManager, name: str) -> str:
    from t2i.registry.errors import UnknownComponentError

    try:
        return manager.registry.get("recipe", name).name
    except UnknownComponentError as exc:
        raise RecipeChoiceError(str(exc)) from None
