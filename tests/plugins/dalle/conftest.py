"""Fixtures of the DALL-E plugin's tests (tiny configs; skip without the plugin)."""

import pytest

pytest.importorskip("t2i_dalle", reason="the DALL-E plugin is not installed (-e plugins/t2i_dalle)")


@pytest.fixture
def rel_err():
    """max |a - b| / max |b|, in float64."""
    return lambda a, b: float(
        (a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)
    )
