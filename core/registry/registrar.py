"""The component registry: names -> factories, per kind, with owners and aliases."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from t2i.kinds import KINDS
from t2i.registry.errors import DuplicateComponentError, UnknownComponentError
from t2i.registry.lazy import resolve


def normalize(name: str) -> str:
    """Lookup key of a name: case-insensitive, and ' ', '-', '_' are the same."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


@attrs.frozen
class ComponentEntry:
    """One registered component: its canonical name, factory, owner and aliases."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    default: bool = False
    contract: str | None = None

    @property
    def model_contract(self) -> str | None:
        """The model contract the component declares (at registration or on its factory)."""
        return self.contract or getattr(self.factory, "model_contract", None)

    def create(self, **options: Any) -> Any:
        """Call the factory with ``options``."""
        return self.factory(**options)


class ComponentRegistry:
    """All components of all kinds, registered through :class:`Registrar` objects."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, ComponentEntry]] = {k: {} for k in KINDS}
        self._lookup: dict[str, dict[str, str]] = {k: {} for k in KINDS}

    def _check_kind(self, kind: str) -> None:
        if kind not in self._entries:
            raise ValueError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")

    def add(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any],
        *,
        plugin: str,
        aliases: Iterable[str] = (),
        replaces: str | None = None,
        description: str = "",
        default: bool = False,
        contract: str | None = None,
    ) -> ComponentEntry:
        """Register ``factory`` as ``name``; see :class:`Registrar` for the rules."""
        self._check_kind(kind)
        if not callable(factory):
            raise TypeError(f"{kind} {name!r} from plugin {plugin!r}: factory must be callable")
        aliases = tuple(aliases)
        if replaces is not None:
            old = self._entries[kind].get(self._lookup[kind].get(normalize(replaces), ""))
            if old is None:
                raise UnknownComponentError(
                    kind, replaces, self.close_matches(kind, replaces), self.names(kind)
                )
            self._remove(kind, old.name)
        for key in (name, *aliases):
            owner_name = self._lookup[kind].get(normalize(key))
            if owner_name is not None:
                owner = self._entries[kind][owner_name]
                raise DuplicateComponentError(kind, key, owner.plugin, plugin)
        entry = ComponentEntry(kind, name, factory, plugin, aliases, description, default, contract)
        self._entries[kind][name] = entry
        for key in (name, *aliases):
            self._lookup[kind][normalize(key)] = name
        return entry

    def _remove(self, kind: str, name: str) -> None:
        entry = self._entries[kind].pop(name)
        for key in (entry.name, *entry.aliases):
            self._lookup[kind].pop(normalize(key), None)

    def remove_plugin(self, plugin: str) -> None:
        """Drop everything ``plugin`` registered (used when its registration fails half-way)."""
        for kind, entries in self._entries.items():
            for name in [n for n, e in entries.items() if e.plugin == plugin]:
                self._remove(kind, name)

    def has(self, kind: str, name: str) -> bool:
        self._check_kind(kind)
        return normalize(name) in self._lookup[kind]

    def get(self, kind: str, name: str) -> ComponentEntry:
        """The entry for ``name`` or one of its aliases; raises :class:`UnknownComponentError`."""
        self._check_kind(kind)
        canonical = self._lookup[kind].get(normalize(name))
        if canonical is None:
            raise UnknownComponentError(
                kind, name, self.close_matches(kind, name), self.names(kind)
            )
        return self._entries[kind][canonical]

    def create(self, kind: str, name: str, **options: Any) -> Any:
        """Instantiate ``name`` of ``kind`` with ``options``."""
        return self.get(kind, name).create(**options)

    def get_node_type(self, name: str) -> Any:
        """The :class:`~t2i.graph.node.NodeType` class registered as ``name``."""
        entry = self.get("node", name)
        cls = resolve(entry.factory)
        if not getattr(cls, "type_name", ""):
            cls.type_name = entry.name
        return cls

    def names(self, kind: str) -> list[str]:
        self._check_kind(kind)
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None) -> list[ComponentEntry]:
        kinds = [kind] if kind else list(KINDS)
        return [e for k in kinds for _, e in sorted(self._entries[k].items())]

    def close_matches(self, kind: str, name: str) -> list[str]:
        keys = list(self._lookup[kind])
        hits = difflib.get_close_matches(normalize(name), keys, n=3, cutoff=0.6)
        out: list[str] = []
        for h in hits:
            canonical = self._lookup[kind][h]
            if canonical not in out:
                out.append(canonical)
        return out


class Registrar:
    """What a registration hook receives: ``register(name, factory, aliases=..., replaces=...)``.

    Bound to one kind and one plugin, so every entry knows its owner. A name (or
    alias) that another plugin already holds raises
    :class:`~t2i.registry.errors.DuplicateComponentError` naming both plugins,
    unless ``replaces`` names the entry being overridden.

    ``default=True`` marks a recipe as the one ``t2i generate`` runs without ``--recipe``
    (an embedded default model). ``contract=`` declares the model contract of a denoiser,
    sampler or guidance whose factory does not carry ``model_contract`` itself.
    """

    def __init__(self, registry: ComponentRegistry, kind: str, plugin: str):
        self.registry, self.kind, self.plugin = registry, kind, plugin

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        aliases: Iterable[str] = (),
        replaces: str | None = None,
        description: str = "",
        default: bool = False,
        contract: str | None = None,
    ) -> ComponentEntry:
        if not description:
            description = (getattr(factory, "__doc__", None) or "").strip().split("\n")[0]
        return self.registry.add(
            self.kind,
            name,
            factory,
            plugin=self.plugin,
            aliases=aliases,
            replaces=replaces,
            description=description,
            default=default,
            contract=contract,
        )

    def __repr__(self) -> str:
        return f"Registrar(kind={self.kind!r}, plugin={self.plugin!r})"
