"""Prompt emphasis ("attention") syntax of the Stable Diffusion web UI, family-independent.

The syntax (AUTOMATIC1111 stable-diffusion-webui, ``modules/prompt_parser.py``, documented
behaviour; this is an independent implementation):

- ``(text)`` multiplies the weight of ``text`` by 1.1; nesting multiplies: ``((text))`` = 1.21.
- ``(text:1.5)`` multiplies it by 1.5 instead (any decimal, signed).
- ``[text]`` multiplies it by 1/1.1.
- ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are the literal characters; any other backslash
  is dropped.
- A bracket opened and never closed is closed at the end of the prompt; a closing bracket with
  no opener is literal text.
- ``BREAK`` (upper case, a whole word) ends the current 75-token chunk; it appears in the result
  as the marker :data:`BREAK` ``("BREAK", -1.0)``.
- Neighbouring pieces of equal weight are merged; an empty prompt gives ``[("", 1.0)]``.

Two deliberate differences from the web UI, both on inputs where it misbehaves:
``BREAK`` inside brackets stays a chunk break (the web UI weights the marker and then encodes the
word "BREAK"), and a malformed weight such as ``(a:1.2.3)`` is kept as literal text (the web UI
raises ``ValueError``).

Example::

    >>> parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    [('a ', 1.0), ('house', 1.5730000000000004), (' ', 1.1), ('on', 1.0), (' a ', 1.1),
     ('hill', 0.55), (', sun, ', 1.1), ('sky', 1.4641000000000006), ('.', 1.1)]
"""

from __future__ import annotations

import re

PromptSegment = tuple[str, float]
"""A piece of prompt text and its emphasis weight (1.0 = neutral)."""

BREAK: PromptSegment = ("BREAK", -1.0)
"""The marker that :func:`parse_prompt_attention` emits for the ``BREAK`` keyword."""

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

_SPECIAL = "\\()[]:"
_ESCAPABLE = "()[]\\"
_PLAIN_RUN = re.compile(r"[^\\()\[\]:]+")
_EXPLICIT_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*", re.S)


def is_break(segment: PromptSegment) -> bool:
    """True when ``segment`` is the ``BREAK`` chunk-break marker."""
    return segment[0] == BREAK[0] and segment[1] == BREAK[1]


class _Builder:
    """Accumulates weighted pieces; brackets remember where their span starts."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.weights: list[float] = []
        self.breaks: list[bool] = []
        self.open_round: list[int] = []
        self.open_square: list[int] = []

    def add_text(self, text: str) -> None:
        """Add literal text, turning each ``BREAK`` word into a marker."""
        pieces = _BREAK_WORD.split(text)
        for index, piece in enumerate(pieces):
            if index > 0:
                self._append(BREAK[0], BREAK[1], is_marker=True)
            self._append(piece, 1.0, is_marker=False)

    def _append(self, text: str, weight: float, *, is_marker: bool) -> None:
        self.texts.append(text)
        self.weights.append(weight)
        self.breaks.append(is_marker)

    def scale_from(self, start: int, factor: float) -> None:
        """Multiply the weight of every piece from index ``start`` on (markers excepted)."""
        for i in range(start, len(self.weights)):
            if not self.breaks[i]:
                self.weights[i] *= factor

    def result(self) -> list[PromptSegment]:
        """Merge neighbouring pieces of equal weight (never across a marker)."""
        merged: list[list] = []
        for text, weight, marker in zip(self.texts, self.weights, self.breaks):
            if merged and not marker and not merged[-1][2] and merged[-1][1] == weight:
                merged[-1][0] += text
            else:
                merged.append([text, weight, marker])
        if not merged:
            return [("", 1.0)]
        return [(text, weight) for text, weight, _ in merged]


def parse_prompt_attention(text: str) -> list[PromptSegment]:
    """Split a prompt into ``(text, weight)`` pieces following the web UI's emphasis syntax.

    Args:
        text: the prompt, e.g. ``"a (red:1.2) cube [on] a ((sphere))"``.

    Returns:
        Pieces in prompt order with their multiplied weights; ``BREAK`` keywords appear as the
        :data:`BREAK` marker. Never empty: an empty prompt gives ``[("", 1.0)]``.

    Raises:
        TypeError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    out = _Builder()
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            if i + 1 < n and text[i + 1] in _ESCAPABLE:
                out.add_text(text[i + 1])
                i += 2
            else:  # a lone backslash is dropped, as in the web UI
                i += 1
        elif char == "(":
            out.open_round.append(len(out.texts))
            i += 1
        elif char == "[":
            out.open_square.append(len(out.texts))
            i += 1
        elif char == ":":
            match = _EXPLICIT_WEIGHT.match(text, i)
            weight = _parse_float(match.group(1)) if match else None
            if match and weight is not None and out.open_round:
                out.scale_from(out.open_round.pop(), weight)
                i = match.end()
            elif match and weight is not None:  # ":1.3)" with no "(" open is literal text
                out.add_text(match.group(0))
                i = match.end()
            else:
                out.add_text(":")
                i += 1
        elif char == ")":
            if out.open_round:
                out.scale_from(out.open_round.pop(), ROUND_MULTIPLIER)
            else:
                out.add_text(")")
            i += 1
        elif char == "]":
            if out.open_square:
                out.scale_from(out.open_square.pop(), SQUARE_MULTIPLIER)
            else:
                out.add_text("]")
            i += 1
        else:
            match = _PLAIN_RUN.match(text, i)
            out.add_text(match.group(0))
            i = match.end()
    # unclosed brackets close at the end: round ones first, then square, outermost first
    for start in out.open_round:
        out.scale_from(start, ROUND_MULTIPLIER)
    for start in out.open_square:
        out.scale_from(start, SQUARE_MULTIPLIER)
    return out.result()


def _parse_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def strip_emphasis(text: str) -> str:
    """The prompt's text with the emphasis syntax removed and ``BREAK`` markers dropped."""
    return "".join(seg[0] for seg in parse_prompt_attention(text) if not is_break(seg))
