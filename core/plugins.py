"""The process-wide plugin manager: the core's built-ins plus every entry-point plugin.

This sits above the registry, the graph and the toolboxes (it loads :mod:`t2i.builtins`,
which registers their components), so the registry itself imports none of them.
"""

from __future__ import annotations

from t2i.registry.manager import PluginManager
from t2i.version import __version__

_default: PluginManager | None = None


def get_plugin_manager(*, reload: bool = False) -> PluginManager:
    """The process-wide manager: the core's built-ins plus entry-point plugins."""
    global _default
    if _default is None or reload:
        from t2i import builtins

        manager = PluginManager()
        manager.register_plugin(builtins, "builtins", version=__version__, source="t2i")
        manager.load_entry_points()
        _default = manager
    return _default


def set_plugin_manager(manager: PluginManager | None) -> PluginManager | None:
    """Replace the process-wide manager (tests, embedding applications); returns the old one."""
    global _default
    previous, _default = _default, manager
    return previous
