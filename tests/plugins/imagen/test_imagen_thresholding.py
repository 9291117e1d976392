"""The core's dynamic thresholding (``guidance="dynamic"``) is diffusers' ``_threshold_sample``
(Imagen section 2.3 as DDPMScheduler implements it), on random float64 batches."""

import pytest
import torch

from t2i.diffusion.guidance.guidance import DynamicThresholding, dynamic_threshold

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize(("ratio", "max_value"), [(0.995, 1.5), (0.95, 1.0), (0.9, 3.0)])
def test_dynamic_threshold_equals_diffusers(ratio, max_value):
    scheduler = diffusers.DDPMScheduler(
        thresholding=True, dynamic_thresholding_ratio=ratio, sample_max_value=max_value
    )
    scales = torch.tensor([0.3, 1.0, 2.0, 4.0, 9.0], dtype=torch.float64).view(-1, 1, 1, 1)
    x0 = torch.randn(5, 3, 8, 8, dtype=torch.float64) * scales
    expected = scheduler._threshold_sample(x0.clone())
    got = dynamic_threshold(x0, ratio, max_value)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert not torch.equal(got[-1], x0[-1])  # the wide rows were thresholded


def test_percentile_and_max_value_are_checked():
    with pytest.raises(ValueError, match="percentile"):
        DynamicThresholding(percentile=0.0)
    with pytest.raises(ValueError, match="max_value"):
        DynamicThresholding(max_value=0.5)
