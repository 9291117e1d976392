"""The AUTOMATIC1111 "infotext": generation parameters in a PNG ``parameters`` text chunk.

Layout (A1111 ``create_infotext``): the prompt, an optional ``Negative prompt: ...``
line, then one line of ``Key: value`` pairs joined by ", "; a value holding ``,``,
``:`` or a newline is JSON-quoted. A1111's PNG-info tab reads what we write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_PAIR = re.compile(r'\s*(\w[\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _quote(value: Any) -> str:
    text = str(value)
    if any(c in text for c in ',:\n"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """Build the infotext; keys whose value is None are left out (as A1111 does)."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    pairs = ", ".join(f"{k}: {_quote(v)}" for k, v in params.items() if v is not None)
    lines.append(pairs)
    return "\n".join(lines)


def parse_infotext(text: str) -> dict[str, Any]:
    """Parse an infotext back into ``{"Prompt", "Negative prompt", key: value ...}``.

    Like A1111, the last line counts as parameters only if it holds at least 3 pairs.
    """
    lines = text.strip().split("\n")
    result: dict[str, Any] = {}
    last = lines[-1] if lines else ""
    pairs = _PAIR.findall(last)
    if len(pairs) >= 3:
        lines = lines[:-1]
        for key, value in pairs:
            value = value.strip()
            if value.startswith('"') and value.endswith('"'):
                value = json.loads(value)
            result[key.strip()] = value
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    result["Prompt"] = "\n".join(prompt_lines)
    result["Negative prompt"] = "\n".join(negative_lines)
    if "Size" in result:
        w, _, h = str(result["Size"]).partition("x")
        result["Size-1"], result["Size-2"] = w, h
    return result
