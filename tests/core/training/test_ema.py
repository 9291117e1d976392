"""The EMA of the trained weights against hand computations."""

import pytest
import torch

from t2i.training import EMA, ema_decay_at


def test_decay_warms_up_as_the_ldm_trainer_did():
    assert [ema_decay_at(s, 0.999) for s in (0, 99, 100, 1000, 1001, 5000)] == [
        0.0,
        0.0,
        0.99,
        0.99,
        0.999,
        0.999,
    ]


def test_update_applied_and_state_round_trip():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    ema = EMA([p], decay=0.9)
    with torch.no_grad():
        p.copy_(torch.tensor([4.0, 0.0]))
    ema.update(0)  # decay 0: the average is the weights
    assert ema.shadow[0].tolist() == [4.0, 0.0]
    with torch.no_grad():
        p.copy_(torch.tensor([104.0, 10.0]))
    ema.update(500)  # 0.99 * 4 + 0.01 * 104 = 5; 0.99 * 0 + 0.01 * 10 = 0.1
    torch.testing.assert_close(ema.shadow[0], torch.tensor([5.0, 0.1]))
    with torch.no_grad():
        p.copy_(torch.tensor([15.0, 1.1]))
    ema.update(2000)  # 0.9 * 5 + 0.1 * 15 = 6; 0.9 * 0.1 + 0.1 * 1.1 = 0.2
    torch.testing.assert_close(ema.shadow[0], torch.tensor([6.0, 0.2]))
    with ema.applied():
        torch.testing.assert_close(p.detach(), torch.tensor([6.0, 0.2]))
    assert p.tolist() == [15.0, 1.100000023841858]  # the trained weights are back
    other = EMA([torch.nn.Parameter(torch.zeros(2))], decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow[0], ema.shadow[0])
    with pytest.raises(ValueError, match="tracks 1 tensors"):
        EMA([p, p], 0.9).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        EMA([p], 1.0)
