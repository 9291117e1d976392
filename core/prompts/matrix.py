"""Prompt matrix expansion, as the web UI's "Prompt matrix" script does (``prompt_matrix.py``).

``"a cat|red|in a hat"`` holds a kept first part and n optional parts separated by ``|``; the
matrix renders every combination of the optional parts, 2**n prompts, all with the same seed.
Combination ``k`` includes optional part ``j`` when bit ``j`` of ``k`` is set, so the first prompt
is the first part alone and the last one holds every part (the web UI's order).
"""

from __future__ import annotations

MAX_OPTIONAL_PARTS = 12
"""At most 2**12 = 4096 prompts: more is almost surely a mistake (a stray ``|``)."""


def expand_prompt_matrix(
    prompt: str,
    *,
    separator: str = ", ",
    variable_parts_first: bool = False,
) -> list[tuple[str, tuple[str, ...]]]:
    """Expand a ``|``-separated prompt into every combination of its optional parts.

    Args:
        prompt: ``"kept part|optional 1|optional 2|..."``. Without ``|`` the result is the prompt
            alone.
        separator: what joins the parts (the web UI offers ``", "`` and ``" "``).
        variable_parts_first: put the optional parts before the kept part.

    Returns:
        ``2**n`` pairs ``(prompt, labels)``: ``labels`` are the optional parts included, in order
        (empty for the first prompt). Parts are stripped of surrounding spaces and commas; empty
        optional parts are kept as empty labels but add no text.

    Raises:
        TypeError: ``prompt`` is not a string.
        ValueError: more than :data:`MAX_OPTIONAL_PARTS` optional parts.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    first, *optional = (part.strip().strip(",").strip() for part in prompt.split("|"))
    if len(optional) > MAX_OPTIONAL_PARTS:
        raise ValueError(
            f"prompt matrix has {len(optional)} optional parts (2**{len(optional)} prompts); "
            f"the limit is {MAX_OPTIONAL_PARTS}: remove some '|' separators"
        )
    results: list[tuple[str, tuple[str, ...]]] = []
    for combination in range(2 ** len(optional)):
        labels = tuple(part for j, part in enumerate(optional) if combination >> j & 1)
        variable = [part for part in labels if part]
        parts = [*variable, first] if variable_parts_first else [first, *variable]
        results.append((separator.join(p for p in parts if p), labels))
    return results
