"""DiffusionSampler end to end: registry names, reproducibility, img2img, errors, no host sync.

Jobs are built here as the ``Sigmas`` / ``Guide`` nodes build them: sigmas from a schedule
(cut for img2img), the model wrapped by guidance, the conditioning placed."""

from __future__ import annotations

import random

import pytest
import torch
from torch.overrides import TorchFunctionMode

from t2i.contracts import DiffusionJob
from t2i.diffusion.guidance import ClassifierFreeGuidance, NoGuidance
from t2i.diffusion.names import resolve_sampler_name
from t2i.diffusion.registration import (
    BUILTIN_SAMPLERS,
    register_guidance,
    register_samplers,
    register_schedules,
)
from t2i.diffusion.sampler import img2img_sigmas
from t2i.diffusion.sampling import DiscreteDenoiser
from t2i.diffusion.schedules import get_alphas_cumprod
from t2i.payloads import Conditioning, Latent
from t2i.registry import ComponentRegistry, Registrar

F64 = torch.float64
SHAPE = (2, 4, 8, 8)


@pytest.fixture(scope="module")
def registry():
    reg = ComponentRegistry()
    register_samplers(Registrar(reg, "sampler", "builtins"))
    register_schedules(Registrar(reg, "schedule", "builtins"))
    register_guidance(Registrar(reg, "guidance", "builtins"))
    return reg


class CountingNet:
    """A per-row eps network of (x_in, t, cond); counts calls."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(4, 4, generator=g, dtype=F64) * 0.4
        self.calls = 0

    def __call__(self, x_in, t, cond):
        self.calls += 1
        shift = cond.embeds.mean(dim=(1, 2)).reshape(-1, 1, 1, 1) if cond is not None else 0
        h = torch.einsum("oc,bchw->bohw", self.w.to(x_in.dtype), x_in)
        return torch.tanh(h + shift) * (0.5 + t.reshape(-1, 1, 1, 1) / 2000)


def _model(seed=0):
    net = CountingNet(seed)
    return net, DiscreteDenoiser(net, get_alphas_cumprod("scaled_linear", 1000))


def _cond(seed):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(1, 3, 8, generator=g, dtype=F64))


def _sampler(registry, name, **kw):
    return registry.create("sampler", name, **kw)


def _sigmas(registry, sampler, model, steps, schedule=None):
    return registry.create("schedule", schedule or sampler.default_schedule).get_sigmas(
        model, steps
    )


def _job(model, seeds, sampler=None, registry=None, **kw):
    """A job as the graph makes it (sampler and registry pick the default schedule)."""
    opts = dict(
        positive=_cond(1),
        negative=_cond(2),
        steps=6,
        cfg_scale=5.0,
        schedule=None,
        guidance=ClassifierFreeGuidance(),
        strength=1.0,
        init=None,
        dtype=F64,
    )
    opts.update(kw)
    batch = len(seeds)
    sigmas = _sigmas(registry, sampler, model, opts["steps"], opts["schedule"])
    if opts["init"] is not None:
        sigmas = img2img_sigmas(sigmas, opts["steps"], opts["strength"])
    place = lambda c: c.repeat_to(batch).to(opts.get("device"), opts["dtype"])  # noqa: E731
    neg = None if opts["negative"] is None else place(opts["negative"])
    guided = opts["guidance"].wrap(model, uncond=neg, scale=opts["cfg_scale"])
    rest = {k: opts[k] for k in ("eta", "device", "noise_device", "callback") if k in opts}
    return DiffusionJob(
        model=guided,
        cond=opts["positive"].repeat_to(batch),
        sigmas=sigmas,
        shape=(batch, 4, 8, 8),
        seeds=tuple(seeds),
        init=opts["init"],
        dtype=opts["dtype"],
        **rest,
    )


ALL = [spec.name for spec in BUILTIN_SAMPLERS]


@pytest.mark.parametrize("name", ALL)
def test_same_seed_is_bit_identical_and_independent_of_the_batch(registry, name):
    seeds = (random.randrange(2**31), random.randrange(2**31))
    _, model = _model()
    sampler = _sampler(registry, name)
    job = lambda s: _job(model, s, sampler, registry)  # noqa: E731
    a = sampler.sample(job(seeds)).samples
    b = sampler.sample(job(seeds)).samples
    assert torch.equal(a, b) and torch.isfinite(a).all()
    alone = sampler.sample(job(seeds[1:])).samples
    torch.testing.assert_close(alone[0], a[1], rtol=1e-10, atol=1e-10)
    other = sampler.sample(job((seeds[0] + 1, seeds[1]))).samples
    assert not torch.allclose(other[0], a[0])


def test_every_a1111_name_and_default_schedule(registry):
    expected = {
        "DPM++ 2M": "karras",
        "DPM++ SDE": "karras",
        "DPM2": "karras",
        "DPM++ 2M SDE": "exponential",
        "DDIM": "leading",
        "PLMS": "leading",
        "DDPM": "leading",
        "Euler": "normal",
        "Euler a": "normal",
        "Heun": "normal",
        "LMS": "normal",
        "UniPC": "leading",
        "LCM": "sgm_uniform",
    }
    for label, schedule in expected.items():
        assert registry.create("sampler", label).default_schedule == schedule, label
    assert resolve_sampler_name("DPM++ 2M Karras", registry) == ("dpmpp_2m", "karras")
    assert resolve_sampler_name("DPM++ 2M SDE", registry) == ("dpmpp_2m_sde", None)
    assert resolve_sampler_name("dpm++ 2m sde exponential", registry) == (
        "dpmpp_2m_sde",
        "exponential",
    )
    assert resolve_sampler_name("Euler a", registry) == ("euler_ancestral", None)
    assert resolve_sampler_name("Euler SGM Uniform", registry) == ("euler", "sgm_uniform")
    with pytest.raises(KeyError, match="did you mean"):
        resolve_sampler_name("DPM++ 2M Karas", registry)


def test_schedule_override_and_callback(registry):
    net, model = _model()
    steps = []
    euler = _sampler(registry, "euler")
    job = _job(
        model,
        (1, 2),
        euler,
        registry,
        schedule="karras",
        callback=lambda i, n: steps.append((i, n)),
    )
    euler.sample(job)
    assert steps == [(i, 6) for i in range(1, 7)]
    assert net.calls == 6  # one batched CFG call per Euler step


@pytest.mark.parametrize("name", ALL)
def test_img2img_truncates_schedule_and_noises_init(registry, name):
    net, model = _model()
    sampler = _sampler(registry, name)
    init = Latent(torch.randn(SHAPE, dtype=F64))
    steps, strength = 10, 0.45
    run = int(steps * strength)
    calls = {}

    def fn_spy(denoiser, x, sigmas, **kw):
        calls["sigmas"], calls["x"] = sigmas, x
        return x

    spy = type(sampler)(fn_spy, name="spy", default_schedule=sampler.default_schedule)
    job = _job(model, (3, 4), sampler, registry, init=init, strength=strength, steps=steps)
    spy.sample(job)
    full = _sigmas(registry, sampler, model, steps)
    torch.testing.assert_close(calls["sigmas"], full[steps - run :])
    noise = torch.stack(
        [torch.randn(SHAPE[1:], generator=torch.Generator().manual_seed(s)) for s in (3, 4)]
    ).to(F64)
    torch.testing.assert_close(calls["x"], init.samples + noise * float(full[steps - run]))
    out = sampler.sample(job).samples
    assert out.shape == SHAPE and torch.isfinite(out).all()
    net.calls = 0
    same = sampler.sample(_job(model, (3, 4), sampler, registry, init=init, strength=0.0))
    same = same.samples
    assert torch.equal(same, init.samples) and net.calls == 0


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("strength", 1.5, "strength must be"),
        ("strength", -0.1, "strength must be"),
        ("cfg_scale", -2.0, "scale must be"),
        ("eta", -1.0, "eta must be"),
    ],
)
def test_bad_input_raises_before_any_model_call(registry, field, value, match):
    net, model = _model()
    init = Latent(torch.zeros(SHAPE, dtype=F64))
    ddim = _sampler(registry, "ddim")
    with pytest.raises(ValueError, match=match):
        ddim.sample(_job(model, (1, 2), ddim, registry, init=init, **{field: value}))
    assert net.calls == 0


def test_unknown_schedule_and_sampler_list_names(registry):
    with pytest.raises(KeyError, match="Available schedules"):
        registry.get("schedule", "karras2")
    with pytest.raises(KeyError, match="Available samplers"):
        registry.get("sampler", "eulr_b")


def test_eta_reaches_ddim_and_none_guidance(registry):
    _, model = _model()
    sampler = _sampler(registry, "ddim")
    det = sampler.sample(_job(model, (1, 2), sampler, registry, eta=0.0)).samples
    sto = sampler.sample(_job(model, (1, 2), sampler, registry, eta=1.0)).samples
    assert not torch.allclose(det, sto)
    euler = _sampler(registry, "euler")
    net, model = _model()
    euler.sample(_job(model, (1, 2), euler, registry, guidance=NoGuidance()))
    assert net.calls == 6
    net, model = _model()
    euler.sample(_job(model, (1, 2), euler, registry, negative=None))
    assert net.calls == 6


class NoHostSync(TorchFunctionMode):
    """Fails on every tensor -> host read: what would stall a CUDA stream inside the loop."""

    FORBIDDEN = frozenset(
        {"item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"}
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.FORBIDDEN:
            raise AssertionError(f"host sync inside the sampling loop: Tensor.{func.__name__}")
        return func(*args, **(kwargs or {}))


def test_the_guard_catches_syncs():
    with NoHostSync(), pytest.raises(AssertionError, match="host sync"):
        bool(torch.ones(1) > 0)
    with NoHostSync(), pytest.raises(AssertionError, match="host sync"):
        torch.ones(1).item()


@pytest.mark.parametrize("name", ALL)
def test_sampling_loop_never_reads_tensors_back(registry, name):
    _, model = _model()
    sampler = _sampler(registry, name)
    sigmas = _sigmas(registry, sampler, model, 6).tolist()  # host list, precomputed
    guided = ClassifierFreeGuidance().wrap(model, uncond=_cond(2), scale=5.0)
    x = torch.randn(SHAPE, dtype=F64) * sigmas[0]
    noise = lambda s, sn: torch.randn(SHAPE, dtype=F64)  # noqa: E731
    with NoHostSync():
        out = sampler.fn(
            guided,
            x,
            sigmas,
            cond=_cond(1),
            noise_sampler=noise,
            callback=lambda step: None,
            **sampler.options,
        )
    assert torch.isfinite(out).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_sync_on_cuda(registry):
    _, model = _model()
    sampler = _sampler(registry, "dpmpp_2m_sde")
    job = _job(
        model,
        (1, 2),
        sampler,
        registry,
        device="cuda",
        dtype=torch.float32,
        noise_device="device",
    )
    torch.cuda.set_sync_debug_mode("error")
    try:
        sampler.sample(job)
    finally:
        torch.cuda.set_sync_debug_mode("default")


class StatefulDenoiser:
    """A denoiser with state across the steps of one run (as DeepCache keeps features): it
    returns the previous call's prediction until ``reset_step_cache()`` is called."""

    def __init__(self, inner):
        self.inner, self.resets, self._last = inner, 0, None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def reset_step_cache(self):
        self.resets, self._last = self.resets + 1, None

    def __call__(self, x, sigma, cond):
        if self._last is None or self._last.shape != x.shape:
            self._last = self.inner(x, sigma, cond)
        return self._last


@pytest.mark.parametrize("guidance", [ClassifierFreeGuidance(), NoGuidance()])
def test_every_run_resets_a_stateful_denoiser_through_its_guidance(registry, guidance):
    _, model = _model()
    stateful = StatefulDenoiser(model)
    sampler = _sampler(registry, "euler")
    seeds = [random.randrange(2**31) for _ in range(2)]
    first = sampler.sample(_job(stateful, seeds, sampler, registry, guidance=guidance))
    again = sampler.sample(_job(stateful, seeds, sampler, registry, guidance=guidance))
    assert stateful.resets == 2
    assert torch.equal(first.samples, again.samples)  # the second run saw none of the first's state


@pytest.mark.parametrize(("model_dtype", "sample_dtype"), [
    (torch.float16, torch.float32), (torch.bfloat16, torch.float32),
    (torch.float32, torch.float32), (torch.float64, torch.float64),
])  # fmt: skip
def test_a_16_bit_model_samples_in_float32(model_dtype, sample_dtype):
    from t2i.diffusion.nodes import sampling_dtype

    assert sampling_dtype(model_dtype) == sample_dtype
