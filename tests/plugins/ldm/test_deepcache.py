"""t2i_ldm.deepcache: DeepCache's feature reuse on a tiny random UNet and through the engine."""

from __future__ import annotations

import attrs
import pytest
import torch

from t2i import Engine
from t2i.engine import EngineError
from t2i.testing import make_manager
from t2i_ldm import plugin
from t2i_ldm.config import TINY_UNET
from t2i_ldm.deepcache import DeepCache, check_deepcache
from t2i_ldm.denoiser import LdmDenoiser
from t2i_ldm.unet import UNetModel

CONFIG = attrs.evolve(TINY_UNET, model_channels=16, channel_mult=(1, 2, 2))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = UNetModel(CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def _inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    ctx = torch.randn(batch, 5, CONFIG.context_dim, generator=g)
    return x, ctx


def _steps(fn, x, ctx, ts=(900.0, 700.0, 500.0, 300.0, 100.0)):
    """The predictions of one run: a call per timestep, x nudged between calls."""
    outs = []
    with torch.no_grad():
        for i, t in enumerate(ts):
            outs.append(fn(x + 0.1 * i, torch.full((x.shape[0],), t), ctx))
    return outs


def test_interval_one_equals_plain(unet):
    x, ctx = _inputs()
    cache = DeepCache(1, branch=0)
    plain = _steps(unet, x, ctx)
    cached = _steps(lambda *a: cache(unet, *a), x, ctx)
    assert all(torch.equal(a, b) for a, b in zip(plain, cached))
    assert cache.full_calls == 5 and cache.cached_calls == 0


@pytest.mark.parametrize("branch", [0, 1, 4])
def test_shallow_pass_on_its_own_feature_is_the_full_pass(unet, branch):
    x, ctx = _inputs()
    t = torch.full((2,), 400.0)
    with torch.no_grad():
        out, deep = unet(x, t, ctx, branch=branch)
        again, _ = unet(x, t, ctx, branch=branch, deep=deep)
        assert torch.equal(out, unet(x, t, ctx))
    torch.testing.assert_close(again, out, rtol=0, atol=1e-6)


def test_interval_three_full_steps_plain_cached_steps_shallow(unet):
    x, ctx = _inputs()
    cache = DeepCache(3, branch=1)
    plain = _steps(unet, x, ctx)
    cached = _steps(lambda *a: cache(unet, *a), x, ctx)
    assert [torch.equal(a, b) for a, b in zip(plain, cached)] == [True, False, False, True, False]
    assert (cache.full_calls, cache.cached_calls) == (2, 3)

    def second_step(shift: float) -> torch.Tensor:  # a fresh run: full step, then cached
        run = DeepCache(3, branch=1)
        with torch.no_grad():
            run(unet, x, torch.full((2,), 900.0), ctx)
            return run(unet, x + shift, torch.full((2,), 700.0), ctx)

    assert not torch.equal(second_step(0.0), second_step(1.0))  # the shallow path reads x


def test_cached_step_skips_the_middle_block(unet):
    x, ctx = _inputs()
    calls = []
    handle = unet.middle_block.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        cache = DeepCache(3)
        _steps(lambda *a: cache(unet, *a), x, ctx, ts=tuple(float(t) for t in range(900, 0, -100)))
    finally:
        handle.remove()
    assert len(calls) == 3  # steps 0, 3, 6 of 9


def test_new_run_resets_the_step_counter_and_cache(unet):
    x, ctx = _inputs()
    cache = DeepCache(2)
    first = _steps(lambda *a: cache(unet, *a), x, ctx)
    second = _steps(lambda *a: cache(unet, *a), x, ctx)  # starts at a higher timestep again
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    cache.reset()
    assert cache.step == -1 and not cache._features


def test_cache_of_another_batch_size_is_not_used(unet):
    x, ctx = _inputs(2)
    cache = DeepCache(2)
    with torch.no_grad():
        cache(unet, x, torch.full((2,), 500.0), ctx)
        out = cache(unet, x[:1], torch.full((1,), 400.0), ctx[:1])  # cached step, batch 1
    assert torch.equal(out, unet(x[:1], torch.full((1,), 400.0), ctx[:1]))


@pytest.mark.parametrize(
    ("interval", "branch", "word"),
    [(0, 1, "deepcache=0"), (-2, 1, "deepcache=-2"), (2.0, 1, "deepcache=2.0"),
     (True, 1, "deepcache=True"), (2, -1, "deepcache_branch=-1"), (2, 9, "deepcache_branch=9")],
)  # fmt: skip
def test_bad_values_rejected(interval, branch, word):
    with pytest.raises(ValueError, match=word):
        check_deepcache(interval, branch, blocks=6)


def test_engine_option_and_errors():
    def build(**options):
        return Engine.build("ldm-shapes", plugins=make_manager(plugin), **options)

    plain, fast = build(), build(deepcache=3)
    kw = dict(seed=4, steps=6, batch_size=2, width=32, height=32)
    a, b = fast("a red cube", **kw), fast("a red cube", **kw)  # the cache resets per run
    assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]
    ref = plain("a red cube", **kw)
    assert [im.tobytes() for im in a.images] != [im.tobytes() for im in ref.images]
    for bad in (0, -1, 1.5, "3"):
        with pytest.raises(EngineError, match=f"deepcache={bad!r}"):
            build(deepcache=bad)
    with pytest.raises(EngineError, match=r"deepcache_branch=6 .*\[0, 5\]"):
        build(deepcache=2, deepcache_branch=6)
    with pytest.raises(EngineError, match="needs deepcache"):
        build(deepcache_branch=0)


def test_denoiser_with_deepcache_under_torch_compile(unet, monkeypatch):
    from t2i.engine import compile_component

    torch._dynamo.reset()
    model = UNetModel(CONFIG).eval()
    model.load_state_dict(unet.state_dict())
    denoiser = LdmDenoiser(model, deepcache=DeepCache(2))
    compile_component(denoiser, backend="eager")
    x, ctx = _inputs()
    with torch.no_grad():
        outs = [denoiser(x, torch.full((2,), s), ctx) for s in (10.0, 5.0, 2.0, 1.0)]
    assert all(torch.isfinite(o).all() for o in outs)
    assert (denoiser.deepcache.full_calls, denoiser.deepcache.cached_calls) == (2, 2)
    denoiser.reset_step_cache()
    assert denoiser.deepcache.step == -1


def test_a_run_after_a_cancelled_one_starts_fresh(unet):
    """A run cancelled at a high timestep, then an img2img run starting below it (which the
    cache alone would take for the next step of the first): the sampler resets the
    denoiser's cache before every run, so the second run equals a fresh denoiser's."""
    from t2i.contracts import DiffusionJob
    from t2i.diffusion.guidance import ClassifierFreeGuidance
    from t2i.diffusion.registration import register_samplers
    from t2i.payloads import Conditioning, Latent
    from t2i.registry import ComponentRegistry, Registrar

    reg = ComponentRegistry()
    register_samplers(Registrar(reg, "sampler", "builtins"))
    sampler = reg.create("sampler", "euler")
    x, ctx = _inputs()
    cond, uncond = Conditioning(ctx), Conditioning(torch.zeros_like(ctx))

    def job(denoiser, sigmas, callback=None):
        guided = ClassifierFreeGuidance().wrap(denoiser, uncond=uncond, scale=3.0)
        return DiffusionJob(guided, cond, sigmas, tuple(x.shape), (5, 6), init=Latent(x),
                            callback=callback)  # fmt: skip

    def cancel(step, total):
        if step == 2:
            raise KeyboardInterrupt

    used = LdmDenoiser(unet, deepcache=DeepCache(3))
    sigmas = used.sigmas.flip(0)[::100]  # high to low
    with torch.no_grad(), pytest.raises(KeyboardInterrupt):
        sampler.sample(job(used, torch.cat([sigmas[:6], sigmas.new_zeros(1)]), cancel))
    low = torch.cat([sigmas[7:], sigmas.new_zeros(1)])  # starts below where the first stopped
    with torch.no_grad():
        got = sampler.sample(job(used, low)).samples
        fresh = sampler.sample(job(LdmDenoiser(unet, deepcache=DeepCache(3)), low)).samples
    assert torch.equal(got, fresh)
