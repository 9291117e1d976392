"""t2i.prompts.emphasis against the web UI's documented emphasis behaviour."""

from __future__ import annotations

import random

import pytest

from t2i.prompts import BREAK, is_break, parse_prompt_attention, strip_emphasis

# Examples documented in the web UI (prompt_parser docstring and the "Features" wiki page).
DOCUMENTED = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    (r"\(literal\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.3 * 1.1 * 1.1),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.1**4),
            (".", 1.1),
        ],
    ),
    ("(word)", [("word", 1.1)]),
    ("((word))", [("word", 1.21)]),
    ("(((word)))", [("word", 1.331)]),
    ("[word]", [("word", 1 / 1.1)]),
    ("[[word]]", [("word", 1 / 1.21)]),
    ("(word:1.5)", [("word", 1.5)]),
    ("(word:0.25)", [("word", 0.25)]),
    ("(word: 1.5 )", [("word", 1.5)]),
    ("(word:-1)", [("word", -1.0)]),
    ("(word:+.5)", [("word", 0.5)]),
    ("((word:1.5))", [("word", 1.65)]),
    ("[(word:1.5)]", [("word", 1.5 / 1.1)]),
    (r"\(word\)", [("(word)", 1.0)]),
    (r"\[word\]", [("[word]", 1.0)]),
    (r"back\\slash", [("back\\slash", 1.0)]),
    (r"(\(x\))", [("(x)", 1.1)]),
    ("[unbalanced", [("unbalanced", 1 / 1.1)]),
    ("a ( b [ c", [("a ", 1.0), (" b ", 1.1), (" c", 1.1 / 1.1)]),
    ("closing) only]", [("closing) only]", 1.0)]),
    ("ratio 16:9 here", [("ratio 16:9 here", 1.0)]),
    ("stray:1.3) weight", [("stray:1.3) weight", 1.0)]),
    ("", [("", 1.0)]),
    ("()", [("", 1.0)]),
]


@pytest.mark.parametrize(("prompt", "expected"), DOCUMENTED)
def test_documented_examples(prompt, expected):
    got = parse_prompt_attention(prompt)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12)


def test_docstring_example_exact_floats():
    """The web UI multiplies innermost bracket first: these exact float64 values come out."""
    got = dict(parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."))
    assert got["house"] == 1.5730000000000004
    assert got["hill"] == 0.55
    assert got["sky"] == 1.4641000000000006


def test_break_is_a_marker_between_pieces():
    got = parse_prompt_attention("a red cube BREAK a (blue:1.2) sphere")
    assert got == [("a red cube", 1.0), BREAK, ("a ", 1.0), ("blue", 1.2), (" sphere", 1.0)]
    assert [is_break(s) for s in got] == [False, True, False, False, False]


def test_break_needs_whole_upper_case_word():
    assert parse_prompt_attention("BREAKFAST break Break") == [("BREAKFAST break Break", 1.0)]


def test_break_inside_brackets_stays_a_marker():
    got = parse_prompt_attention("(a BREAK b)")
    assert got == [("a", 1.1), BREAK, ("b", 1.1)]


def test_consecutive_breaks_are_kept():
    got = parse_prompt_attention("a BREAK BREAK b")
    assert sum(is_break(s) for s in got) == 2


def test_malformed_weight_is_literal_text():
    assert parse_prompt_attention("(a:1.2.3)") == [("a:1.2.3", 1.1)]


def test_lone_backslash_is_dropped():
    assert parse_prompt_attention("a\\b") == [("ab", 1.0)]


def test_rejects_non_string():
    with pytest.raises(TypeError, match="must be a str"):
        parse_prompt_attention(None)


def test_strip_emphasis():
    assert strip_emphasis("a ((red:1.3)) [cube] BREAK \\(x\\)") == "a red cube(x)"


def _random_nesting(rng: random.Random) -> tuple[str, float]:
    """Wrap a word in random brackets; return the prompt and the expected weight (float64)."""
    text, weight = "word", 1.0
    for _ in range(rng.randint(0, 6)):
        kind = rng.choice(["round", "square", "explicit"])
        if kind == "round":
            text, weight = f"({text})", weight * 1.1
        elif kind == "square":
            text, weight = f"[{text}]", weight / 1.1
        else:
            value = round(rng.uniform(-2, 3), 2)
            text, weight = f"({text}:{value})", weight * value
    return text, weight


def test_random_nestings_multiply():
    rng = random.Random()
    for _ in range(200):
        prompt, weight = _random_nesting(rng)
        got = parse_prompt_attention(f"x {prompt} y")
        assert "".join(t for t, _ in got) == "x word y", prompt
        word_weight = next(w for t, w in got if "word" in t)
        assert word_weight == pytest.approx(weight, rel=1e-9, abs=1e-12), prompt


def test_unbalanced_random_prompts_never_fail():
    rng = random.Random()
    alphabet = "ab ()[]:\\1.5,"
    for _ in range(300):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        got = parse_prompt_attention(prompt)
        assert got, prompt
        assert all(isinstance(t, str) and isinstance(w, float) for t, w in got)
