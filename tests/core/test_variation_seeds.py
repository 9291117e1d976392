"""Variation seeds and seed resize (issue 20, item 6), against a float64 reference.

The reference is written from A1111's documented algorithm (``modules/rng.py`` ``ImageRNG``,
``slerp``; ``modules/processing.py`` seeds and infotext), not from our code: per image,
the seed's noise and the subseed's noise, each a fresh CPU generator's first draw, are
slerped along axis 1 (mean cosine over 0.9995: A1111's linear fallback); with "resize seed
from" both are drawn at ``(C, h/8, w/8)`` and written centred (offsets ``(H - h) // 2``; a
larger source is cropped to ``h + 2 * offset`` rows) onto the seed's noise of the real size.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from t2i import Engine
from t2i.infotext import parse_infotext
from t2i.noise import BatchNoise
from t2i.request import RequestError
from t2i.testing import make_manager, toy_plugin


def randn64(seed: int, shape) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed)).double()


def slerp64(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    low_n = low / low.norm(dim=1, keepdim=True)
    high_n = high / high.norm(dim=1, keepdim=True)
    dot = (low_n * high_n).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = dot.acos()
    return (((1 - val) * omega).sin() / omega.sin())[:, None] * low + (
        (val * omega).sin() / omega.sin()
    )[:, None] * high


def centred64(canvas: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    out = canvas.clone()
    (_, big_h, big_w), (_, h, w) = canvas.shape, src.shape
    dy, dx = (big_h - h) // 2, (big_w - w) // 2
    rows = h if dy >= 0 else h + 2 * dy
    cols = w if dx >= 0 else w + 2 * dx
    for y in range(rows):
        for x in range(cols):
            out[:, y + max(dy, 0), x + max(dx, 0)] = src[:, y + max(-dy, 0), x + max(-dx, 0)]
    return out


def reference(shape, seed, subseed, strength, resize=None) -> torch.Tensor:
    """One image's initial noise by A1111's rule, in float64 (``resize``: latent (h, w))."""
    noise_shape = shape if resize is None else (shape[0], *resize)
    noise = randn64(seed, noise_shape)
    if strength:
        noise = slerp64(strength, noise, randn64(subseed, noise_shape))
    if resize is not None:
        noise = centred64(randn64(seed, shape), noise)
    return noise


@pytest.mark.parametrize(
    "strength, resize",
    [(0.3, None), (1.0, None), (0.7, (5, 11)), (0.0, (11, 4)), (0.5, (3, 3)), (0.25, (9, 9))],
)
def test_first_noise_matches_a1111_rule(strength, resize):
    shape = (2, 4, 8, 7)
    noise = BatchNoise(
        shape, (11, 11), subseeds=(5, 6), subseed_strength=strength, resize_from=resize
    )
    got = noise.next()
    for i, subseed in enumerate((5, 6)):
        expected = reference(shape[1:], 11, subseed, strength, resize)
        torch.testing.assert_close(got[i].double(), expected, rtol=1e-5, atol=1e-5)
    plain = torch.Generator().manual_seed(11)
    torch.randn(shape[1:], generator=plain)  # the first draw: step noise continues after it
    torch.testing.assert_close(noise.next()[0], torch.randn(shape[1:], generator=plain))


def test_same_seed_and_subseed_take_the_linear_branch():
    got = BatchNoise((1, 4, 8, 8), (3,), subseeds=(3,), subseed_strength=0.4).next()[0]
    torch.testing.assert_close(got.double(), randn64(3, (4, 8, 8)), rtol=1e-6, atol=1e-6)


def test_bad_variation_options_are_refused():
    with pytest.raises(ValueError, match="subseed_strength"):
        BatchNoise((1, 4, 8, 8), (1,), subseeds=(2,), subseed_strength=1.5)
    with pytest.raises(ValueError, match="one subseed per batch row"):
        BatchNoise((2, 4, 8, 8), (1, 2), subseeds=(2,), subseed_strength=0.5)
    with pytest.raises(ValueError, match="resize_from"):
        BatchNoise((1, 4, 8, 8), (1,), resize_from=(0, 4))


def _pipe():
    return Engine.build("toy-diffusion", plugins=make_manager(toy_plugin), sampler="euler")


def _samples(pipe, **fields):
    request = pipe.make_request("a cube", **fields)
    params = {}
    for field, targets in pipe.recipe.bindings.items():
        value = getattr(request, field, None)
        for node, param in targets:
            if value is not None:
                params.setdefault(node, {})[param] = value
    out = pipe.executor.run(pipe.graph, params=params, outputs=["sample", "empty_latent"])
    return out["sample"]["samples"].samples, out["empty_latent"]["latent"]


def test_pipeline_noise_follows_the_variation_seed():
    pipe = _pipe()
    base, _ = _samples(pipe, seed=21, steps=3)
    same, latent = _samples(pipe, seed=21, steps=3, subseed=4, subseed_strength=0.0)
    assert latent.variation is None
    torch.testing.assert_close(same, base)
    # strength 1 is the subseed's noise: with a deterministic sampler, the subseed's image
    full, latent = _samples(pipe, seed=21, steps=3, subseed=4, subseed_strength=1.0)
    other, _ = _samples(pipe, seed=4, steps=3)
    torch.testing.assert_close(full, other, rtol=1e-4, atol=1e-4)
    half, latent = _samples(pipe, seed=21, steps=3, subseed=4, subseed_strength=0.5, batch_size=2)
    assert latent.seeds == (21, 21) and latent.variation.subseeds == (4, 5)
    assert not torch.allclose(half[0], half[1])


def test_seed_resize_uses_the_decoders_factor():
    pipe = _pipe()  # toy decoder: factor 1, 8x8 samples
    _, latent = _samples(pipe, seed=1, seed_resize_from_w=12, seed_resize_from_h=6)
    assert latent.variation.resize_from == (6, 12) and latent.variation.strength == 0.0
    assert latent.seeds == (1,)


def test_seeds_infotext_and_batches_as_a1111():
    pipe = _pipe()
    result = pipe(
        "a cube",
        seed=100,
        subseed=7,
        subseed_strength=0.25,
        seed_resize_from_w=16,
        seed_resize_from_h=12,
        batch_size=2,
        batch_count=2,
        steps=2,
    )
    assert result.seeds == [100, 100, 100, 100]  # strength > 0: every image keeps the seed
    infos = [parse_infotext(t) for t in result.infotexts]
    assert [i["Variation seed"] for i in infos] == ["7", "8", "9", "10"]
    assert infos[0]["Variation seed strength"] == "0.25"
    assert infos[0]["Seed resize from"] == "16x12"
    keys = list(infos[0])
    assert keys.index("Model") < keys.index("Variation seed") < keys.index("Seed resize from")
    plain = pipe("a cube", seed=100, batch_size=2, steps=2)
    assert plain.seeds == [100, 101] and "Variation seed" not in plain.infotexts[0]


def test_variation_fields_are_checked():
    pipe = _pipe()
    with pytest.raises(RequestError, match="subseed_strength"):
        pipe.make_request("a", subseed_strength=1.5)
    with pytest.raises(RequestError, match="subseed"):
        pipe.make_request("a", subseed=-2)
    gan = Engine.build("toy-gan", plugins=make_manager(toy_plugin))
    with pytest.raises(RequestError, match="does not bind variation seeds"):
        gan.make_request("a", subseed_strength=0.5)


def test_cli_seed_resize_from_option(monkeypatch, tmp_path):
    from t2i.cli import main as cli_main

    seen = {}

    class Fake:
        def __call__(self, prompt, **fields):
            seen.update(fields)
            raise SystemExit(0)

    monkeypatch.setattr(cli_main, "_manager", lambda: make_manager(toy_plugin))
    monkeypatch.setattr("t2i.engine.Engine.build", lambda *a, **k: Fake())
    runner = CliRunner()
    args = ["generate", "x", "--recipe", "toy-diffusion", "-o", str(tmp_path / "a.png")]
    runner.invoke(
        cli_main.cli,
        [*args, "--subseed", "3", "--subseed-strength", "0.5", "--seed-resize-from", "64x48"],
    )
    assert seen["subseed"] == 3 and seen["subseed_strength"] == 0.5
    assert (seen["seed_resize_from_w"], seen["seed_resize_from_h"]) == (64, 48)
    bad = runner.invoke(cli_main.cli, [*args, "--seed-resize-from", "64by48"])
    assert bad.exit_code == 2 and "WIDTHxHEIGHT" in bad.output
