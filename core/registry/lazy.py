"""Factories named by import path, so that listing plugins imports no model library.

``register("ldm.unet", lazy("t2i_ldm.plugin:create_unet_denoiser", contract="diffusion"))``
registers a factory that imports ``t2i_ldm.plugin`` only when the component is made, its
signature is asked for (``Engine.build`` reads a recipe's options from it) or, for node
types, when a graph is validated. Attributes the registry reads without making the
component (``model_contract``, a sampler's ``default_schedule``) are given as keywords.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any


class LazyFactory:
    """A factory ``"package.module:attribute"``, imported on first use.

    Args:
        target: ``"module:attribute"`` (the attribute may be dotted: ``"mod:Class.make"``).
        doc: the one-line description ``t2i components`` shows (no import needed).
        **attributes: read by the registry without importing (``model_contract="tokens"``).
    """

    def __init__(self, target: str, *, doc: str = "", **attributes: Any) -> None:
        module, sep, attribute = target.partition(":")
        if not sep or not module or not attribute:
            raise ValueError(f"lazy target must be 'module:attribute', got {target!r}")
        self.target = target
        self.__doc__ = doc
        self._resolved: Any = None
        for name, value in attributes.items():
            setattr(self, name, value)

    def resolve(self) -> Any:
        """The object the target names (imported once)."""
        if self._resolved is None:
            module, _, attribute = self.target.partition(":")
            obj: Any = importlib.import_module(module)
            for part in attribute.split("."):
                obj = getattr(obj, part)
            self._resolved = obj
        return self._resolved

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.resolve())

    def __repr__(self) -> str:
        return f"lazy({self.target!r})"


def lazy(target: str, *, doc: str = "", **attributes: Any) -> LazyFactory:
    """A :class:`LazyFactory` for ``target`` (``"module:attribute"``)."""
    return LazyFactory(target, doc=doc, **attributes)


def resolve(factory: Any) -> Any:
    """``factory`` itself, or what a :class:`LazyFactory` names."""
    return factory.resolve() if isinstance(factory, LazyFactory) else factory
