"""The core training loop on the toy regression: accumulation, schedule, EMA, state, stops."""

import time

import pytest
import torch
from torch import nn

from t2i.checkpoints import open_checkpoint
from t2i.testing.toy_training import FILE, ToyRegression, build_toy
from t2i.training import TrainConfig, TrainOptionsError, train
from t2i.training.state import load_state


def _config(**changes):
    base = dict(name="toy", steps=5, batch_size=8, lr=0.05, device="cpu", log_every=1)
    return TrainConfig(**{**base, **changes})


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_two_half_batches_make_one_full_batch(tmp_path):
    full, data = build_toy(64, seed=3)
    one = train(full, data, _config(), tmp_path / "full")
    accum, data = build_toy(64, seed=3)
    two = train(accum, data, _config(grad_accum=2), tmp_path / "accum")
    assert _params(full).sub(_params(accum)).abs().max() < 1e-6
    torch.testing.assert_close(
        torch.tensor(one.losses), torch.tensor(two.losses), rtol=1e-6, atol=1e-7
    )
    # and the steps did move the weights (the comparison above is not vacuous)
    assert _params(full).sub(_params(build_toy(64, seed=3)[0])).abs().max() > 1e-2


def test_the_optimizer_follows_warmup_and_cooldown(tmp_path):
    model, data = build_toy(32)
    train(model, data, _config(steps=2, warmup=4, cooldown=0.5, lr=0.1), tmp_path / "a")
    state = load_state(tmp_path / "a" / "toy.state.pt")
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * 2 / 4)  # step 1
    model, data = build_toy(32)
    train(model, data, _config(steps=8, warmup=4, cooldown=0.5, lr=0.1), tmp_path / "b")
    state = load_state(tmp_path / "b" / "toy.state.pt")
    # step 7 of 8: warm, progress 7/8 -> (1 - 7/8) / 0.5 = 0.25 of the peak
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * 0.25)


def test_the_export_holds_the_ema_weights(tmp_path):
    model, data = build_toy(32)
    result = train(model, data, _config(steps=105, ema_decay=0.9, log_every=50), tmp_path)
    folder = result.save(tmp_path / "model")
    with open_checkpoint(folder / FILE) as reader:
        saved = reader.to_state_dict()
    exported = torch.cat([saved["linear.weight"].flatten(), saved["linear.bias"].flatten()])
    shadow = torch.cat([s.flatten() for s in result.ema.shadow])
    assert torch.equal(exported, shadow)
    assert (exported - _params(model)).abs().max() > 1e-6  # not the trained weights
    state = load_state(tmp_path / "toy.state.pt")
    assert state["step"] == 105 and torch.equal(state["ema"]["shadow"][0], result.ema.shadow[0])
    assert [s for s, _ in result.losses] == [50, 100]


def test_state_holds_everything_a_resume_needs(tmp_path):
    model, data = build_toy(32)
    train(model, data, _config(steps=3, save_every=2), tmp_path)
    state = load_state(tmp_path / "toy.state.pt")
    assert {"model", "ema", "optimizer", "scaler", "rng", "data", "step"} <= set(state)
    assert state["step"] == 3 and torch.equal(state["model"]["linear.bias"], model.linear.bias)
    assert torch.equal(state["data"]["generator"], data.generator.get_state())


def test_minutes_stop_the_run_and_the_state_is_saved(tmp_path):
    model, data = build_toy(32)
    config = _config(steps=1000, minutes=0.0, started=time.time() - 1)
    result = train(model, data, config, tmp_path)
    assert (result.stopped, result.step) == ("minutes", 0)
    assert load_state(tmp_path / "toy.state.pt")["step"] == 0


def test_bf16_trains_and_fp16_needs_cuda(tmp_path):
    model, data = build_toy(32)
    result = train(model, data, _config(steps=2, precision="bf16"), tmp_path)
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses)
    if not torch.cuda.is_available():
        with pytest.raises(TrainOptionsError, match="fp16 needs a CUDA device"):
            train(*build_toy(32), _config(precision="fp16"), tmp_path / "fp16")


def test_a_stray_trainable_parameter_is_refused(tmp_path):
    class Leaky(ToyRegression):
        def __init__(self):
            super().__init__()
            self.extra = nn.Parameter(torch.zeros(1))  # requires grad, but not returned

        def trainable_parameters(self):
            return self.linear.parameters()

    with pytest.raises(ValueError, match=r"\['extra'\] require grad"):
        train(Leaky(), build_toy(8)[1], _config(), tmp_path)


def test_stale_temporaries_go_and_foreign_state_is_refused(tmp_path):
    stale = tmp_path / ".toy.state.pt.abc123.tmp"  # what a SIGKILL mid-save leaves
    tmp_path.mkdir(exist_ok=True)
    stale.write_bytes(b"half a file")
    train(*build_toy(8), _config(steps=1), tmp_path)
    assert not stale.exists()
    torch.save({"step": 3}, tmp_path / "other.state.pt")
    with pytest.raises(ValueError, match="not a state file"):
        train(*build_toy(8), _config(name="other"), tmp_path)


def test_an_ema_turned_on_at_a_resume_starts_from_the_saved_weights(tmp_path):
    train(*build_toy(32), _config(steps=3), tmp_path)
    model, data = build_toy(32)
    result = train(model, data, _config(steps=3, ema_decay=0.9), tmp_path)  # nothing to do
    saved = load_state(tmp_path / "toy.state.pt")["model"]
    assert torch.equal(result.ema.shadow[0], saved["linear.weight"])
