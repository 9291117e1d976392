"""Plugin hooks, the component registry and plugin loading.

Public API: :data:`hookimpl`, :class:`Registrar`, :class:`ComponentRegistry`,
:class:`PluginManager` and the errors. The process-wide manager is
:func:`t2i.plugins.get_plugin_manager`.
"""

from t2i.registry.errors import (
    DuplicateComponentError,
    PluginLoadError,
    RegistryError,
    UnknownComponentError,
)
from t2i.registry.hookspecs import REGISTRATION_HOOKS, hookimpl, hookspec
from t2i.registry.lazy import LazyFactory, lazy
from t2i.registry.manager import PluginManager, PluginRecord
from t2i.registry.registrar import ComponentEntry, ComponentRegistry, Registrar

__all__ = [
    "REGISTRATION_HOOKS",
    "ComponentEntry",
    "ComponentRegistry",
    "DuplicateComponentError",
    "LazyFactory",
    "PluginLoadError",
    "PluginManager",
    "PluginRecord",
    "Registrar",
    "RegistryError",
    "UnknownComponentError",
    "hookimpl",
    "hookspec",
    "lazy",
]
