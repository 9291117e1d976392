"""Hook implementations of the DALL-E family (entry point ``t2i`` -> ``dalle``).

Everything is registered by import path (:func:`t2i.registry.lazy`): discovering the plugin
imports no torch. Factories: :mod:`t2i_dalle.recipes` (the ``dalle-shapes`` components and
recipe), :mod:`t2i_dalle.mini.recipes` (``dalle-mini``), :mod:`t2i_dalle.train`.
"""

from __future__ import annotations

from t2i.registry import hookimpl, lazy


def _at(module: str, name: str, doc: str, **attributes) -> object:
    return lazy(f"t2i_dalle.{module}:{name}", doc=doc, **attributes)


@hookimpl
def t2i_register_trainers(register) -> None:
    doc = "Train dalle-shapes: --stage vae (dVAE, Gumbel-softmax), then --stage prior."
    register("dalle", _at("train", "DalleTrainer", doc))
