"""``t2i train FAMILY``: a click group built from the registered trainers (placeholder)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def train_group(manager: Callable[[], Any]) -> click.Group:
    """The ``train`` group; its subcommands are the trainers ``manager()`` registered."""

    class TrainGroup(click.Group):
        def list_commands(self, ctx):
            return manager().registry.names("trainer")

        def get_command(self, ctx, name):
            reg = manager().registry
            if not reg.has("trainer", name):
                return None
            return reg.get("trainer", name).create()

    return TrainGroup("train", help="Train a model (trainers are registered by plugins).")
