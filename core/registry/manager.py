"""Plugin loading: built-ins, entry points (group ``t2i``), isolation and reporting.

Environment:
    T2I_LOAD_PLUGINS: comma-separated allow-list of entry-point names ("" loads none).
    T2I_DISABLE_PLUGINS: comma-separated names never loaded.
    T2I_STRICT_PLUGINS=1: a plugin that fails to import or register is fatal.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import types
from typing import Any

import attrs
import pluggy
import structlog

from t2i.registry import hookspecs
from t2i.registry.errors import PluginLoadError
from t2i.registry.registrar import ComponentRegistry, Registrar

log = structlog.get_logger("t2i.registry")

ENTRY_POINT_GROUP = "t2i"


@attrs.define
class PluginRecord:
    """What ``t2i plugins`` reports about one plugin."""

    name: str
    version: str = ""
    source: str = ""
    status: str = "loaded"  # loaded | failed | disabled
    error: str = ""
    components: list[str] = attrs.Factory(list)


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def strict() -> bool:
    return os.environ.get("T2I_STRICT_PLUGINS", "") not in ("", "0", "false")


class PluginManager:
    """Owns the pluggy manager, the component registry and the plugin records."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = ComponentRegistry()
        self.records: dict[str, PluginRecord] = {}

    # -- loading -------------------------------------------------------------------------
    def register_plugin(
        self, plugin: Any, name: str | None = None, *, version: str = "", source: str = ""
    ) -> PluginRecord:
        """Register a plugin object (module or instance) and collect its components now.

        A plugin whose registration raises (any ``BaseException`` but ``KeyboardInterrupt``,
        ``SystemExit`` included) is recorded as failed and removed; with
        ``T2I_STRICT_PLUGINS=1`` it raises :class:`PluginLoadError`.
        """
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        record = PluginRecord(name=name, version=version, source=source or _source_of(plugin))
        self.records[name] = record
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
            self._collect(plugin, name, record)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # one broken plugin (even one calling sys.exit) never
            # takes the engine down
            self.registry.remove_plugin(name)
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            record.status, record.error = "failed", _describe(exc)
            log.warning("plugin_failed", plugin=name, error=record.error)
            if strict():
                raise PluginLoadError(
                    f"plugin {name!r} failed to register: {record.error}"
                ) from exc
        return record

    def _own_hook(self, plugin: Any, hook_name: str) -> Any:
        """A pluggy caller of ``hook_name`` that reaches ``plugin``'s hookimpl alone."""
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)

    def _collect(self, plugin: Any, name: str, record: PluginRecord) -> None:
        for kind, hook_name in hookspecs.REGISTRATION_HOOKS.items():
            self._own_hook(plugin, hook_name)(register=Registrar(self.registry, kind, name))
        record.components = [
            f"{e.kind}:{e.name}" for e in self.registry.entries() if e.plugin == name
        ]

    def register_commands(self, cli: Any) -> None:
        """Let every loaded plugin add CLI commands (``t2i_register_commands(cli)``).

        Each plugin is called on its own: one whose hook raises is recorded as failed
        (its commands are left out) and the others still mount theirs.
        """
        for name, plugin in list(self.pm.list_name_plugin()):
            try:
                self._own_hook(plugin, "t2i_register_commands")(cli=cli)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too
                record = self.records.setdefault(name, PluginRecord(name=name))
                record.status, record.error = "failed", _describe(exc)
                log.warning("plugin_commands_failed", plugin=name, error=record.error)
                if strict():
                    raise PluginLoadError(
                        f"plugin {name!r} failed to register commands: {record.error}"
                    ) from exc

    def load_entry_points(self) -> None:
        """Load every plugin of entry-point group ``t2i``, each isolated from the others."""
        allow = _env_list("T2I_LOAD_PLUGINS")
        deny = set(_env_list("T2I_DISABLE_PLUGINS") or [])
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            version = dist.version if dist is not None else ""
            source = f"{dist.name if dist else '?'} ({ep.value})"
            if ep.name in self.records:
                continue
            if ep.name in deny or (allow is not None and ep.name not in allow):
                self.records[ep.name] = PluginRecord(ep.name, version, source, status="disabled")
                continue
            try:
                plugin = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too: a plugin never ends the process
                err = _describe(exc)
                self.records[ep.name] = PluginRecord(ep.name, version, source, "failed", err)
                log.warning("plugin_import_failed", plugin=ep.name, error=err)
                if strict():
                    raise PluginLoadError(f"plugin {ep.name!r} failed to import: {err}") from exc
                continue
            self.register_plugin(plugin, ep.name, version=version, source=source)


def _describe(exc: BaseException) -> str:
    """``Type: message`` of a plugin's failure (a ``sys.exit`` is named as such)."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SystemExit):
        text += " (the plugin called sys.exit; plugins must raise exceptions instead)"
    return text


def _source_of(plugin: Any) -> str:
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    return type(plugin).__module__
