"""The embedded gan-shapes default: not shipped yet.

Targets (issue 15): single-object alignment >= 0.90, two-object >= 0.60. The best model
trained so far (4,315 steps on one H200, 4.8 minutes) reached neither (0.000 / 0.000,
Fréchet distance 54.0; BENCHMARKS.md), so no weights are committed (a default goes into
git only in its final form) and the recipe asks for a trained folder, saying how to get one.
"""

import pytest
from t2i_gan import plugin

from t2i import Engine
from t2i.checkpoints import CheckpointError
from t2i.testing import make_manager


def test_gan_shapes_without_weights_says_how_to_get_them():
    with pytest.raises(CheckpointError, match=r"(?s)no trained weights yet.*t2i train gan"):
        Engine.build("gan-shapes", plugins=make_manager(plugin))
