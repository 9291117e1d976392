"""Learning-rate warm-up and cool-down against hand computations."""

from t2i.training import lr_factor
from t2i.training.schedule import run_progress


def test_warmup_is_linear_then_flat():
    assert lr_factor(0, 0.0, warmup=500, cooldown=0.0) == 1 / 500
    assert lr_factor(249, 0.0, warmup=500, cooldown=0.0) == 0.5
    assert lr_factor(499, 0.0, warmup=500, cooldown=0.0) == 1.0
    assert lr_factor(10_000, 0.9, warmup=500, cooldown=0.0) == 1.0
    assert lr_factor(0, 0.0, warmup=0, cooldown=0.0) == 1.0


def test_cooldown_is_linear_to_zero_over_the_last_fraction():
    f = [lr_factor(1000, p, warmup=0, cooldown=0.2) for p in (0.5, 0.8, 0.9, 0.95, 1.0)]
    assert [round(x, 12) for x in f] == [1.0, 1.0, 0.5, 0.25, 0.0]
    # warm-up and cool-down multiply (the ldm trainer's test: step 3 of 4, warm-up 500)
    assert lr_factor(3, 0.75, warmup=500, cooldown=0.5) == 4 / 500 * 0.5


def test_progress_is_steps_or_clock_whichever_is_further():
    assert run_progress(25, 100) == 0.25
    assert run_progress(25, 100, clock=0.6) == 0.6
    assert run_progress(0, 0) == 0.0
