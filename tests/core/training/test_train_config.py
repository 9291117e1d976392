"""Bad loop options fail when the config is made, naming the option and the fix."""

import pytest

from t2i.training import TrainConfig, TrainOptionsError, check_split


@pytest.mark.parametrize(
    ("field", "value", "option"),
    [
        ("steps", -1, "--steps must be >= 0"),
        ("batch_size", 0, "--batch-size must be >= 1"),
        ("lr", 0.0, "--lr must be > 0"),
        ("weight_decay", -0.1, "TrainConfig.weight_decay must be >= 0"),
        ("warmup", -5, "--warmup must be >= 0"),
        ("cooldown", 1.5, "--cooldown must be in [0, 1]"),
        ("ema_decay", 1.0, "--ema-decay must be in [0, 1)"),
        ("grad_accum", 0, "--grad-accum must be >= 1"),
        ("clip_grad", 0.0, "TrainConfig.clip_grad must be > 0"),
        ("precision", "fp8", "--precision must be one of fp32, bf16, fp16"),
        ("save_every", 0, "--save-every must be >= 1"),
        ("log_every", 0, "--log-every must be >= 1"),
        ("minutes", -1.0, "--minutes must be >= 0"),
        ("name", "../x", "TrainConfig.name must be a file name"),
    ],
)
def test_bad_values_name_the_option_and_the_fix(field, value, option):
    with pytest.raises(TrainOptionsError) as error:
        TrainConfig(**{field: value})
    message = str(error.value)
    assert message.startswith(option) and f"got {value!r}: " in message
    assert len(message.splitlines()) == 1


def test_good_values_and_the_defaults_pass():
    TrainConfig()
    TrainConfig(ema_decay=0.0, cooldown=1.0, minutes=0.0, clip_grad=None, steps=0)


def test_the_batch_must_split_into_micro_batches_and_processes():
    with pytest.raises(TrainOptionsError, match="--grad-accum 4 micro-batches"):
        TrainConfig(batch_size=6, grad_accum=4)
    check_split(8, 2, 2)
    with pytest.raises(TrainOptionsError, match="--nproc_per_node"):
        check_split(6, 4)
    with pytest.raises(TrainOptionsError, match=r"the VAE batch 6 .* multiple of 4"):
        check_split(6, 2, 2, option="the VAE batch")
