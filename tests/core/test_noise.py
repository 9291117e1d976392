"""Seeded noise: per-row generators, batch independence, dtype independence, step noise."""

from __future__ import annotations

import random

import pytest
import torch

from t2i.noise import BatchNoise, seeded_noise


def _seeds(k):
    return tuple(random.randrange(2**32) for _ in range(k))


def test_row_i_comes_from_a_cpu_generator_seeded_with_seed_i():
    seeds = _seeds(3)
    noise = seeded_noise((3, 4, 5, 6), seeds, device="cpu", dtype=torch.float32)
    for i, s in enumerate(seeds):
        expected = torch.randn((4, 5, 6), generator=torch.Generator("cpu").manual_seed(s))
        assert torch.equal(noise[i], expected)


def test_same_seed_same_noise_in_any_batch_and_dtype():
    a, b = _seeds(2)
    alone = seeded_noise((1, 4, 8, 8), (b,), device="cpu")
    in_batch = seeded_noise((2, 4, 8, 8), (a, b), device="cpu", dtype=torch.float64)
    assert torch.equal(in_batch[1].float(), alone[0])
    assert torch.equal(seeded_noise((2, 3), (a, b)), seeded_noise((2, 3), (a, b)))


def test_step_noise_continues_each_rows_generator():
    seeds = _seeds(2)
    bn = BatchNoise((2, 3, 4), seeds)
    first, second = bn.next(), bn.sampler(1.0, 0.5)
    g = torch.Generator().manual_seed(seeds[1])
    torch.randn((3, 4), generator=g)
    assert torch.equal(second[1], torch.randn((3, 4), generator=g))
    assert not torch.equal(first, second)
    # consecutive seeds never share streams: row 0's step noise differs from row 1's start
    bn2 = BatchNoise((2, 3, 4), (5, 6))
    start = bn2.next()
    assert not torch.equal(bn2.next()[0], start[1])


def test_device_noise_option_and_errors():
    n = seeded_noise((2, 3), (1, 2), device="cpu", noise_device="device")
    assert n.shape == (2, 3)
    with pytest.raises(ValueError, match="one seed per batch row"):
        seeded_noise((2, 3), (1,))
    with pytest.raises(ValueError, match="noise_device"):
        seeded_noise((2, 3), (1, 2), noise_device="gpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_noise_is_the_same_on_cuda():
    seeds = _seeds(2)
    cpu = seeded_noise((2, 4, 8, 8), seeds, device="cpu")
    gpu = seeded_noise((2, 4, 8, 8), seeds, device="cuda")
    assert torch.equal(cpu, gpu.cpu())
