"""Hooks of the DreamBooth plugin: the ``t2i dreambooth`` command and the ``dreambooth``
recipe (a fine-tuned run folder, built as its base recipe with the run's weights)."""

from __future__ import annotations

from t2i.registry import hookimpl, lazy


@hookimpl
def t2i_register_commands(cli) -> None:
    """``t2i dreambooth``; its module imports torch only when the command runs."""
    from t2i_dreambooth.cli import dreambooth_command

    cli.add_command(dreambooth_command)


@hookimpl
def t2i_register_recipes(register) -> None:
    register(
        "dreambooth",
        lazy(
            "t2i_dreambooth.recipe:dreambooth_recipe",
            doc="a t2i dreambooth run: its base recipe with the fine-tuned weights or LoRA",
        ),
    )
