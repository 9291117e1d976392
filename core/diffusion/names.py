"""Combined web-UI names such as ``"DPM++ 2M Karras"`` -> ``(sampler, schedule)``.

A1111 (v1.9+) keeps accepting the legacy combined labels: its
``get_sampler_and_scheduler`` strips a trailing schedule label from the sampler
name. :func:`resolve_sampler_name` does the same against our registry.
"""

from __future__ import annotations

from t2i.registry.registrar import ComponentRegistry, normalize


def resolve_sampler_name(name: str, registry: ComponentRegistry) -> tuple[str, str | None]:
    """Split ``name`` into a registered sampler and an optional schedule (canonical names).

    An exact sampler name or alias wins (``"DPM++ 2M SDE"`` is a sampler, not ``DPM++ 2M`` +
    ``SDE``); otherwise the longest trailing schedule label whose prefix is a sampler.

    Raises:
        UnknownComponentError: neither form matches; the message lists close matches.
    """
    if registry.has("sampler", name):
        return registry.get("sampler", name).name, None
    key = normalize(name)
    labels: list[tuple[str, str]] = []
    for entry in registry.entries("schedule"):
        labels.extend((normalize(label), entry.name) for label in (entry.name, *entry.aliases))
    for label, schedule in sorted(labels, key=lambda kv: -len(kv[0])):
        suffix = "_" + label
        if key.endswith(suffix) and len(key) > len(suffix):
            prefix = key[: -len(suffix)]
            if registry.has("sampler", prefix):
                return registry.get("sampler", prefix).name, schedule
    registry.get("sampler", name)  # raises UnknownComponentError with close matches
    raise AssertionError("unreachable")
