"""Family-independent prompt syntax: emphasis weights, ``BREAK``, prompt matrices.

>>> from t2i.prompts import parse_prompt_attention
>>> parse_prompt_attention("a (red:1.2) cube")
[('a ', 1.0), ('red', 1.2), (' cube', 1.0)]
"""

from __future__ import annotations

from t2i.prompts.emphasis import (
    BREAK,
    PromptSegment,
    is_break,
    parse_prompt_attention,
    strip_emphasis,
)
from t2i.prompts.matrix import expand_prompt_matrix

__all__ = [
    "BREAK",
    "PromptSegment",
    "expand_prompt_matrix",
    "is_break",
    "parse_prompt_attention",
    "strip_emphasis",
]
