"""Errors raised by the component registry and plugin loading."""

from __future__ import annotations


class RegistryError(Exception):
    """Base class of registry errors."""


class DuplicateComponentError(RegistryError):
    """Two plugins registered the same name for one kind without ``replaces=``."""

    def __init__(self, kind: str, name: str, first: str, second: str):
        self.kind, self.name, self.first, self.second = kind, name, first, second
        super().__init__(
            f"{kind} {name!r} is registered by both plugin {first!r} and plugin {second!r}; "
            f"rename one, or pass replaces={name!r} in {second!r} to override it on purpose"
        )


class UnknownComponentError(RegistryError, KeyError):
    """A name that no plugin registered. The message lists close matches and all names."""

    def __init__(self, kind: str, name: str, close: list[str], available: list[str]):
        self.kind, self.name, self.close, self.available = kind, name, close, available
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
        avail = ", ".join(available) if available else "(none registered)"
        super().__init__(f"unknown {kind} {name!r}{hint} Available {kind}s: {avail}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class PluginLoadError(RegistryError):
    """A plugin failed to import or to register (fatal only under ``T2I_STRICT_PLUGINS=1``)."""
