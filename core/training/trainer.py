"""Typed trainers: what a plugin registers so that ``t2i train NAME`` runs its family.

A plugin subclasses :class:`Trainer` and registers the class (a factory: making one loads
nothing) through ``t2i_register_trainers``::

    @hookimpl
    def t2i_register_trainers(register):
        register("toy", ToyTrainer)

The core builds the command from it (:mod:`t2i.training.cli`): the loop options every
trainer shares (``--steps``, ``--lr``, ``--batch-size`` ...: one :class:`TrainConfig`) and
the family's own :attr:`Trainer.options`, whose values ``run`` receives as keywords.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import click

from t2i.training.config import TrainConfig


def _is_option_name(_instance: Any, _attribute: attrs.Attribute, value: str) -> None:
    if not value.startswith("--") or len(value) < 3:
        raise ValueError(f"an option name starts with '--', got {value!r}")


@attrs.frozen
class TrainerOption:
    """One command-line option of a trainer.

    Attributes:
        name: ``--images``; ``aliases``: more spellings (``--n``).
        type: a click type or a Python type (``int``, ``float``, ``str``); ignored for flags.
        default: the value when the option is not given.
        help: one sentence for ``--help``.
        is_flag: a boolean flag (default False).
        dest: the keyword ``run`` receives (default: ``name`` without dashes, ``-`` as ``_``).
    """

    name: str = attrs.field(validator=_is_option_name)
    type: Any = None
    default: Any = None
    help: str = ""
    is_flag: bool = False
    aliases: tuple[str, ...] = ()
    dest: str | None = None

    @property
    def keyword(self) -> str:
        return self.dest or self.name.lstrip("-").replace("-", "_")

    def click_option(self, *, default: Any = None, help: str | None = None) -> click.Option:
        """The ``click.Option``; ``default``/``help`` (when given) replace this option's."""
        default = self.default if default is None else default
        text = self.help if help is None else help
        decls = [self.name, *self.aliases, self.keyword]
        if self.is_flag:
            return click.Option(decls, is_flag=True, default=bool(default), help=text)
        return click.Option(
            decls, type=self.type, default=default, help=text, show_default=default is not None
        )


class Trainer:
    """Base of a registered trainer; subclass it, document it, and implement :meth:`run`.

    Class attributes:
        options: the family's own :class:`TrainerOption` s.
        defaults: the family's defaults of loop options, by :class:`TrainConfig` field
            (``{"steps": 20_000, "lr": 3e-4}``).
        loop_help: the family's help of loop options, by field (what ``--steps`` counts).

    The class docstring is the command's help; its first line is the description.
    """

    options: ClassVar[tuple[TrainerOption, ...]] = ()
    defaults: ClassVar[Mapping[str, Any]] = {}
    loop_help: ClassVar[Mapping[str, str]] = {}

    @property
    def help(self) -> str:
        return inspect.getdoc(type(self)) or ""

    @property
    def description(self) -> str:
        """The first line of the class docstring."""
        return self.help.split("\n", 1)[0]

    def run(self, config: TrainConfig, out: Path, **options: Any) -> Path:
        """Train into ``out`` on the core loop; returns the exported model folder.

        ``config`` holds the loop options (its ``name`` is the trainer's; a trainer with
        several stages evolves one config per stage), ``options`` the family's. Raise
        :class:`~t2i.training.config.TrainOptionsError` for options that cannot work:
        the command line reports it as a usage error.
        """
        raise NotImplementedError(f"{type(self).__name__}.run")
