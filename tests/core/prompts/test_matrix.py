"""t2i.prompts.matrix: the web UI's prompt matrix."""

from __future__ import annotations

import itertools
import random

import pytest

from t2i.prompts import expand_prompt_matrix
from t2i.prompts.matrix import MAX_OPTIONAL_PARTS


def test_three_parts_give_four_prompts_in_web_ui_order():
    got = expand_prompt_matrix("a cat|red|in a hat")
    assert got == [
        ("a cat", ()),
        ("a cat, red", ("red",)),
        ("a cat, in a hat", ("in a hat",)),
        ("a cat, red, in a hat", ("red", "in a hat")),
    ]


def test_no_separator_is_the_prompt_alone():
    assert expand_prompt_matrix("  a dog ") == [("a dog", ())]


def test_space_separator_and_variable_parts_first():
    got = expand_prompt_matrix("cat|fluffy", separator=" ", variable_parts_first=True)
    assert got == [("cat", ()), ("fluffy cat", ("fluffy",))]


def test_parts_are_stripped_of_spaces_and_commas():
    got = expand_prompt_matrix("photo of a cat, | red, | , blue")
    assert [p for p, _ in got] == [
        "photo of a cat",
        "photo of a cat, red",
        "photo of a cat, blue",
        "photo of a cat, red, blue",
    ]


def test_random_part_counts_cover_every_combination():
    rng = random.Random()
    n = rng.randint(1, 6)
    parts = [f"p{i}" for i in range(n)]
    got = expand_prompt_matrix("base|" + "|".join(parts))
    assert len(got) == 2**n
    expected = {labels for r in range(n + 1) for labels in itertools.combinations(parts, r)}
    assert {labels for _, labels in got} == expected
    for prompt, labels in got:
        assert prompt.split(", ") == ["base", *labels]


def test_too_many_parts_is_a_clear_error():
    with pytest.raises(ValueError, match="optional parts"):
        expand_prompt_matrix("a" + "|x" * (MAX_OPTIONAL_PARTS + 1))


def test_rejects_non_string():
    with pytest.raises(TypeError):
        expand_prompt_matrix(["a|b"])
