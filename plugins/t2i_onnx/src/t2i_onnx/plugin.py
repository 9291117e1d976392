"""Hooks of t2i_onnx: the ``t2i export onnx`` command (its module imports torch only when run)."""

from __future__ import annotations

from t2i.registry import hookimpl


@hookimpl
def t2i_register_commands(cli) -> None:
    """``t2i export onnx``: a group ``export`` (other formats may join it)."""
    from t2i_onnx.cli import export_group

    if "export" not in cli.commands:
        cli.add_command(export_group)
