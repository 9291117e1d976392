"""One contract per generation shape, each implemented by the toy plugin, run by one engine.

Diffusion (``Sigmas + Guide -> SampleDiffusion``), autoregressive tokens (``Guide ->
SampleTokens`` with a KV cache), single pass (``Guide -> SampleOnce``) and a cascade (two
diffusion samplings joined by ``LowResCondition``); guidance that does not fit its model
is refused when the recipe is built.
"""

import attrs
import pytest
import torch

from t2i import Engine
from t2i.contracts import (
    DiffusionDenoiser,
    DiffusionJob,
    Generator,
    GeneratorJob,
    KVCache,
    TokenJob,
    TokenPredictor,
)
from t2i.engine import EngineError
from t2i.payloads import Conditioning, ImageCondition
from t2i.testing import toy_plugin


def test_toy_components_satisfy_their_contracts():
    assert isinstance(toy_plugin.ToyDenoiser(), DiffusionDenoiser)
    assert isinstance(toy_plugin.ToySuperRes(), DiffusionDenoiser)
    assert isinstance(toy_plugin.TinyTransformer(), TokenPredictor)
    assert isinstance(toy_plugin.TinyGenerator(), Generator)


def test_jobs_carry_only_their_shape():
    assert "sigmas" in attrs.fields_dict(DiffusionJob)
    for job in (TokenJob, GeneratorJob):
        fields = attrs.fields_dict(job)
        assert not {"sigmas", "eta", "init", "registry"} & set(fields), job
    assert "registry" not in attrs.fields_dict(DiffusionJob)


def test_kv_cache_extends_per_layer_and_repeats():
    cache = KVCache()
    k = torch.randn(2, 4, 1, 8)
    keys, _ = cache.extend(0, k, k)
    assert cache.length == 1 and keys.shape == (2, 4, 1, 8)
    cache.extend(1, k, k)
    keys, _ = cache.extend(0, k + 1, k + 1)
    assert cache.length == 2 and torch.equal(keys[:, :, 1], (k + 1)[:, :, 0])
    assert cache.repeat(2).keys[0].shape == (4, 4, 2, 8)
    with pytest.raises(IndexError, match="layer 3"):
        cache.extend(3, k, k)


def test_token_loop_feeds_one_new_token_per_call(t2i_manager):
    toy_plugin.CACHE_LENGTHS.clear()
    Engine.build("toy-ar")("x", seed=1, width=12, height=8)
    assert toy_plugin.CACHE_LENGTHS == [1, 2, 3, 4, 5, 6]  # 3x2 tokens, the cache grows by one


def test_logit_guidance_runs_prompt_and_negative_in_one_call(t2i_manager):
    pipe = Engine.build("toy-ar", guidance="supercondition")
    plain = pipe("a cat", seed=3, cfg_scale=1.0).images[0].tobytes()
    toy_plugin.CALLS.clear()
    toy_plugin.CACHE_LENGTHS.clear()
    guided = pipe("a cat", negative_prompt="a dog", seed=3, cfg_scale=4.0)
    assert toy_plugin.CALLS["transformer"] == 16  # 4x4 tokens, one batched call each
    assert guided.images[0].tobytes() != plain


def test_truncation_is_the_generators_guidance(t2i_manager):
    pipe = Engine.build("toy-gan")
    a, b = pipe("x", seed=1, batch_size=2, cfg_scale=0.0).images
    assert a.tobytes() == b.tobytes()  # psi = 0: every seed gives the mean image
    c, d = pipe("x", seed=1, batch_size=2, cfg_scale=1.0).images
    assert c.tobytes() != d.tobytes()
    untruncated = Engine.build("toy-gan", guidance="none")("x", seed=1, batch_size=2).images
    assert untruncated[0].tobytes() == c.tobytes()  # psi = 1 is the generator alone


def test_cascade_conditions_the_second_stage_on_the_first(t2i_manager, monkeypatch):
    pipe = Engine.build("toy-cascade")
    seen = []
    original = toy_plugin.ToySuperRes._predict

    def spy(self, x_in, t, cond):
        seen.append((tuple(cond.image.image.shape), cond.image.noise_level.tolist()))
        return original(self, x_in, t, cond)

    monkeypatch.setattr(toy_plugin.ToySuperRes, "_predict", spy)
    result = pipe("a red cube", negative_prompt="blur", seed=5, batch_size=2, noise_level=0.3)
    assert result.images[0].size == (16, 16)
    # CFG batches prompt and negative: the low-res image rides on both halves
    assert seen and all(shape == (4, 3, 8, 8) for shape, _ in seen)
    assert all(levels == pytest.approx([0.3] * 4) for _, levels in seen)
    other = pipe("a red cube", negative_prompt="blur", seed=5, batch_size=2, noise_level=0.9)
    assert other.images[0].tobytes() != result.images[0].tobytes()
    nodes = [n.type for n in pipe.graph]
    assert nodes.count("SampleDiffusion") == 2 and "LowResCondition" in nodes


def test_image_condition_payload_checks_its_batch():
    with pytest.raises(ValueError, match="noise_level must have shape"):
        ImageCondition(torch.zeros(2, 3, 4, 4), torch.zeros(3))
    cond = Conditioning(torch.zeros(1, 2, 4)).with_image(
        ImageCondition(torch.zeros(1, 3, 4, 4), torch.zeros(1))
    )
    both = Conditioning.cat([cond.repeat_to(2), cond.repeat_to(2)])
    assert both.image.image.shape == (4, 3, 4, 4) and both.image.noise_level.shape == (4,)
    with pytest.raises(ValueError, match="with and without an image"):
        Conditioning.cat([cond, Conditioning(torch.zeros(1, 2, 4))])


@pytest.mark.parametrize(
    ("recipe", "override", "words"),
    [
        ("toy-gan", {"guidance": "dynamic"}, ["'dynamic'", "diffusion", "generator", "truncation"]),
        ("toy-ar", {"guidance": "cfg"}, ["'cfg'", "token predictor", "supercondition"]),
        ("toy-diffusion", {"guidance": "truncation"}, ["'truncation'", "toy.denoiser"]),
        ("toy-ar", {"sampler": "euler"}, ["sampler 'euler'", "token predictor", "top_k"]),
        ("toy-gan", {"sampler": "top_k"}, ["sampler 'top_k'", "generator"]),
    ],
)
def test_guidance_or_sampler_that_does_not_fit_is_refused_at_build(
    t2i_manager, recipe, override, words
):
    with pytest.raises(EngineError) as err:
        Engine.build(recipe, **override)
    for word in words:
        assert word in str(err.value)
    assert toy_plugin.CALLS["tokenizer"] == 0  # refused before any component loads


def test_a_request_that_does_not_fit_is_refused_before_model_work(t2i_manager):
    pipe = Engine.build("toy-gan")
    with pytest.raises(EngineError, match="dynamic"):
        pipe("x", guidance="dynamic")
    assert toy_plugin.CALLS["generator"] == 0


def test_web_ui_names_are_resolved_once_per_request(t2i_manager, monkeypatch):
    from t2i import engine

    calls = []
    original = engine.resolve_sampler_name
    monkeypatch.setattr(engine, "resolve_sampler_name", lambda *a: calls.append(a) or original(*a))
    pipe = Engine.build("toy-diffusion", sampler="DPM++ 2M Karras")
    calls.clear()
    request = pipe.make_request("x", seed=1, batch_count=2)
    assert (request.sampler, request.schedule) == ("dpmpp_2m", "karras")
    result = pipe.run(request)
    assert len(calls) == 1 and len(result.images) == 2
    assert "Sampler: DPM++ 2M" in result.infotexts[0]
    assert "Schedule type: Karras" in result.infotexts[0]


def test_a_samplers_default_schedule_is_written_into_the_request(t2i_manager):
    request = Engine.build("toy-diffusion").make_request("x", sampler="Euler a")
    assert (request.sampler, request.schedule) == ("euler_ancestral", "normal")
    request = Engine.build("toy-diffusion").make_request("x", sampler="DDIM", schedule="Karras")
    assert (request.sampler, request.schedule) == ("ddim", "karras")


@pytest.mark.parametrize(
    "component",
    [
        toy_plugin.EmbedEncoder,
        toy_plugin.ToyDenoiser,
        toy_plugin.ToySuperRes,
        toy_plugin.TinyTransformer,
        toy_plugin.TinyGenerator,
    ],
)
def test_toy_export_specs_run_and_cover_every_parameter(component):
    made = component()
    spec = made.export_spec()
    for exported in spec:
        out = exported.module(*exported.example_inputs)
        assert isinstance(out, torch.Tensor)
    covered = {id(p) for m in spec.module_list() for p in m.parameters()}
    assert covered == {id(p) for p in made.parameters()}


def test_parameter_count_comes_from_the_export_specs(t2i_manager):
    pipe = Engine.build("toy-gan")
    expected = sum(p.numel() for p in toy_plugin.TinyGenerator().parameters())
    expected += sum(p.numel() for p in toy_plugin.EmbedEncoder().parameters())
    assert pipe.parameter_count() == expected


def test_automatic_schedule_is_each_samplers_own(t2i_manager):
    from t2i.diffusion.registration import BUILTIN_SAMPLERS

    pipe = Engine.build("toy-diffusion")
    for spec in BUILTIN_SAMPLERS:
        for schedule in (None, "Automatic"):
            request = pipe.make_request("x", sampler=spec.name, schedule=schedule)
            assert request.schedule == spec.default_schedule, (spec.name, schedule)
    ddim = pipe("x", seed=2, steps=4, sampler="DDIM").images[0]
    euler = pipe("x", seed=2, steps=4, sampler="Euler").images[0]
    assert ddim.tobytes() != euler.tobytes()  # DDIM runs its own (leading) timesteps


def test_web_ui_labels_model_hash_and_seed_wrap(t2i_manager, tmp_path):
    import attrs

    from t2i.files import short_hash

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not really weights")
    pipe = Engine.build("toy-diffusion")
    pipe.recipe = attrs.evolve(pipe.recipe, model_hash=short_hash(weights))
    result = pipe("x", seed=2**32 - 1, batch_size=2, steps=2, sampler="Euler a")
    assert result.seeds == [2**32 - 1, 0]  # wraps into the 32-bit seed range
    info = result.infotexts[1]
    assert "Sampler: Euler a" in info and "Schedule type: Uniform" in info
    import hashlib

    assert f"Model hash: {hashlib.sha256(b'not really weights').hexdigest()[:10]}" in info
    alone = pipe("x", seed=0, steps=2, sampler="Euler a").images[0]
    assert alone.tobytes() == result.images[1].tobytes()
