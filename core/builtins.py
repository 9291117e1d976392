"""The core's own plugin: the graph's nodes and each generation shape's samplers, schedules,
guidance and nodes (diffusion, autoregressive tokens, single pass).

Registered through the same hooks as any third-party plugin, by :mod:`t2i.plugins`.
"""

from __future__ import annotations

from t2i.registry import hookimpl


@hookimpl
def t2i_register_nodes(register):
    from t2i.autoregressive import registration as autoregressive
    from t2i.diffusion import registration as diffusion
    from t2i.graph import nodes
    from t2i.single_pass import registration as single_pass

    nodes.register_core_nodes(register)
    diffusion.register_nodes(register)
    autoregressive.register_nodes(register)
    single_pass.register_nodes(register)


@hookimpl
def t2i_register_samplers(register):
    from t2i.autoregressive.registration import register_samplers as tokens
    from t2i.diffusion.registration import register_samplers as diffusion
    from t2i.single_pass.registration import register_samplers as single_pass

    diffusion(register)
    tokens(register)
    single_pass(register)


@hookimpl
def t2i_register_schedules(register):
    from t2i.diffusion.registration import register_schedules

    register_schedules(register)


@hookimpl
def t2i_register_guidance(register):
    from t2i.autoregressive.registration import register_guidance as tokens
    from t2i.diffusion.registration import register_guidance as diffusion
    from t2i.single_pass.registration import register_guidance as single_pass

    diffusion(register)
    tokens(register)
    single_pass(register)
