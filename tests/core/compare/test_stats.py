"""Bootstrap intervals over prompts and the significance rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from t2i.compare.stats import (
    MIN_PROMPTS,
    Difference,
    Interval,
    bootstrap_interval,
    paired_difference,
    pairwise_differences,
)


def test_bootstrap_interval_is_the_hand_computed_percentile_interval():
    values = [0.0, 1.0, 1.0, 0.5, 0.25]
    got = bootstrap_interval(values, n_boot=500, seed=3)
    rng = np.random.default_rng(3)  # the same draws, by hand
    means = [np.mean([values[j] for j in row]) for row in rng.integers(0, 5, size=(500, 5))]
    assert got.value == pytest.approx(0.55)
    assert got.low == pytest.approx(np.quantile(means, 0.025))
    assert got.high == pytest.approx(np.quantile(means, 0.975))
    assert got.n == 5
    assert got == bootstrap_interval(values, n_boot=500, seed=3)  # fixed seed: reproducible


def test_two_prompts_zero_and_one_give_the_whole_range():
    # the resampled mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4
    got = bootstrap_interval([0.0, 1.0], n_boot=4000)
    assert (got.value, got.low, got.high) == (0.5, 0.0, 1.0)


def test_bootstrap_interval_of_a_normal_mean_matches_the_normal_theory():
    values = np.random.default_rng(1).normal(0.6, 0.2, size=400)
    got = bootstrap_interval(values, n_boot=4000)
    half = 1.96 * values.std(ddof=1) / math.sqrt(400)  # about 0.0196
    assert got.low == pytest.approx(values.mean() - half, abs=0.003)
    assert got.high == pytest.approx(values.mean() + half, abs=0.003)


def test_nan_prompts_are_left_out_and_all_nan_is_undefined():
    assert bootstrap_interval([1.0, math.nan, 1.0]).n == 2
    assert math.isnan(bootstrap_interval([math.nan]).value)


def test_significance_rule_is_the_difference_interval_excluding_zero():
    a = [1.0] * 10 + [0.0] * 2
    b = [0.0] * 10 + [1.0] * 2
    d = paired_difference(a, b)
    assert d.value == pytest.approx(8 / 12) and d.low > 0
    assert Difference("overall", "a", "b", d).significant
    same = paired_difference(a, a[::-1])  # the same mean: the interval straddles 0
    assert same.low < 0 < same.high and not Difference("overall", "a", "b", same).significant
    assert Interval(-0.3, -0.4, -0.1, 5).excludes_zero()
    few = Difference("pair", "a", "b", Interval(0.5, 0.5, 0.5, MIN_PROMPTS - 1))
    assert few.interval.excludes_zero() and not few.testable and not few.significant
    assert Difference("pair", "a", "b", Interval(0.5, 0.5, 0.5, MIN_PROMPTS)).significant


def test_paired_difference_is_paired_by_prompt():
    # b is a with a constant 0.1 off: every resample gives exactly 0.1, despite a's spread
    a = np.random.default_rng(0).uniform(0, 1, 30)
    d = paired_difference(a, a - 0.1)
    assert d.low == pytest.approx(0.1) and d.high == pytest.approx(0.1)
    with pytest.raises(ValueError, match="same prompts"):
        paired_difference([1.0], [1.0, 0.0])


def test_pairwise_differences_cover_every_pair_and_shared_figure():
    per_prompt = {
        "x": {"overall": [1.0] * 8, "pair": [1.0] * 8},
        "y": {"overall": [0.0] * 8},
        "z": {"overall": [1.0, 0.0] * 4},
    }
    diffs = pairwise_differences(per_prompt, ["overall", "pair"], n_boot=200)
    assert [(d.a, d.b, d.figure) for d in diffs] == [
        ("x", "y", "overall"), ("x", "z", "overall"), ("y", "z", "overall"),
    ]  # fmt: skip
    assert diffs[0].significant and diffs[0].to_dict()["difference"]["value"] == 1.0
