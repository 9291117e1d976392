"""The core's own plugin: built-in samplers, schedules, guidance and graph nodes.

Registered through the same hooks as any third-party plugin.
"""

from __future__ import annotations

from t2i.registry import hookimpl


@hookimpl
def t2i_register_nodes(register):
    from t2i.graph import nodes

    nodes.register_core_nodes(register)


@hookimpl
def t2i_register_samplers(register):
    from t2i.diffusion.registration import register_samplers

    register_samplers(register)


@hookimpl
def t2i_register_schedules(register):
    from t2i.diffusion.registration import register_schedules

    register_schedules(register)


@hookimpl
def t2i_register_guidance(register):
    from t2i.diffusion.registration import register_guidance

    register_guidance(register)
