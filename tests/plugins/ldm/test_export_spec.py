"""Export specs of the LDM components (t2i_ldm.export): each exported module runs on its example
inputs and computes what its component computes, the modules hold every parameter of the
component, the dynamic axes are real, and an ONNX round trip (TorchScript exporter, onnxruntime)
matches at a second batch size and latent size within Optimum's validation tolerances.

Components come from the plugin's factories (random tiny presets) and the shipped ldm-shapes
model; the CLIP and MiniLM encoders are built on tiny random configs (their factories need a
checkpoint or MiniLM's weights).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from transformers import BertConfig, BertModel, CLIPTextModel

from t2i.contracts import Exportable, ExportedModule, ExportSpec
from t2i.payloads import Conditioning, Image, Latent, Tokens
from t2i_ldm import factories, shapes_model
from t2i_ldm.denoiser import LdmDenoiser
from t2i_ldm.minilm import MiniLmConditioner, MiniLmTextEncoder
from t2i_ldm.text_encoder import ClipTextEncoder, apply_emphasis, clip_text_config
from t2i_ldm.vae import LdmDecoder


def _randomize(module: torch.nn.Module, std: float = 0.05) -> None:
    """Perturb every parameter, so zero-initialised layers cannot hide a wrong mapping."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)


def _unet(variant: str) -> LdmDenoiser:
    torch.manual_seed(0)
    denoiser = factories.create_unet_denoiser(variant=variant)
    _randomize(denoiser.unet)
    return denoiser


def _vae() -> LdmDecoder:
    torch.manual_seed(1)
    decoder = factories.create_vae_decoder(variant="tiny-sd1")
    _randomize(decoder.vae)
    return decoder


def _clip(clip_skip: int) -> ClipTextEncoder:
    torch.manual_seed(2)
    return ClipTextEncoder(CLIPTextModel(clip_text_config("tiny")), clip_skip=clip_skip)


def _minilm() -> MiniLmTextEncoder:
    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return MiniLmTextEncoder(MiniLmConditioner(BertModel(config), width=24))


CASES: dict[str, tuple[Callable[[], Any], tuple[str, ...]]] = {
    "sd1-unet": (functools.partial(_unet, "tiny-sd1"), ("unet",)),
    "sd2-unet": (functools.partial(_unet, "tiny-sd2-v"), ("unet",)),
    "vae": (_vae, ("vae_decoder", "vae_encoder")),
    "clip": (functools.partial(_clip, 1), ("text_encoder",)),
    "clip-skip2": (functools.partial(_clip, 2), ("text_encoder",)),
    "minilm": (_minilm, ("text_encoder", "text_adapter")),
    "shapes-unet": (shapes_model.create_denoiser, ("unet",)),
    "shapes-vae": (shapes_model.create_decoder, ("vae_decoder", "vae_encoder")),
    "shapes-text": (shapes_model.create_text_encoder, ("text_encoder",)),
}
"""Case -> (factory, names of the modules its spec exports)."""
SLOW = {"shapes-unet"}
"""Cases whose ONNX round trip takes seconds on 2 CPU cores (the shipped 7 M-parameter UNet)."""

TOLERANCE = {"unet": 1e-4, "vae_decoder": 3e-4, "vae_encoder": 3e-4}
"""Optimum's validation tolerances (absolute, float32); text encoders: CLIP's 1e-3."""
TEXT_TOLERANCE = 1e-3


@functools.cache
def component(case: str) -> Any:
    return CASES[case][0]()


def _modules(spec: ExportSpec) -> dict[str, ExportedModule]:
    return {m.name: m for m in spec}


def _run(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = module(*inputs)
    return out if isinstance(out, tuple) else (out,)


def _same(got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def _walk(obj: Any, depth: int = 2) -> list[torch.nn.Module]:
    """The modules attribute walking finds (what the engine did before export specs)."""
    if isinstance(obj, torch.nn.Module):
        return [obj]
    if depth == 0 or not hasattr(obj, "__dict__"):
        return []
    return [m for value in vars(obj).values() for m in _walk(value, depth - 1)]


def _own_modules(comp: Any) -> list[torch.nn.Module]:
    """The modules a component is documented to hold."""
    if isinstance(comp, LdmDenoiser):
        return [comp.unet]
    if isinstance(comp, LdmDecoder):
        return [comp.vae]
    if isinstance(comp, ClipTextEncoder):
        return [comp.model]
    if isinstance(comp, MiniLmTextEncoder):
        return [comp.conditioner]
    raise TypeError(type(comp))


def _param_ids(modules: list[torch.nn.Module]) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


# -- the spec itself ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_spec_names_its_modules(case):
    comp = component(case)
    assert isinstance(comp, Exportable)
    spec = comp.export_spec()
    assert tuple(m.name for m in spec) == CASES[case][1]
    for m in spec:
        assert len(set(m.input_names) | set(m.output_names)) == len(m.input_names) + len(
            m.output_names
        ), f"{m.name}: input and output names must be distinct"
        weight = next(m.module.parameters())
        for input_name, x in zip(m.input_names, m.example_inputs):
            assert x.device == weight.device, (m.name, input_name)
            if x.is_floating_point() and input_name != "timestep":  # timesteps: float32
                assert x.dtype == weight.dtype, (m.name, input_name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_modules_cover_every_parameter(case):
    comp = component(case)
    spec = comp.export_spec()
    exported = _param_ids(spec.module_list())
    assert exported == _param_ids(_own_modules(comp))
    assert _param_ids(_walk(comp)) <= exported  # nothing attribute walking would find is lost
    if isinstance(comp, LdmDecoder):  # each half holds only its own part of the VAE
        halves = _modules(spec)
        dec, enc = halves["vae_decoder"].module, halves["vae_encoder"].module
        assert not _param_ids([dec]) & _param_ids([enc])


@pytest.mark.parametrize("case", sorted(CASES))
def test_dynamic_axes_name_real_dims(case):
    for m in component(case).export_spec():
        outputs = _run(m.module, m.example_inputs)
        assert len(outputs) == len(m.output_names), m.name
        tensors = dict(zip(m.input_names + m.output_names, m.example_inputs + outputs))
        sizes: dict[str, set[int]] = {}
        for name, axes in m.dynamic_axes.items():
            for axis, label in axes.items():
                assert 0 <= axis < tensors[name].ndim, f"{m.name}.{name} has no axis {axis}"
                sizes.setdefault(label, set()).add(tensors[name].shape[axis])
        # one label, one size: "batch_size" is the same dimension everywhere it is named
        assert all(len(s) == 1 for s in sizes.values()), (m.name, sizes)
        assert sizes["batch_size"] == {2}


# -- each module computes what its component computes ------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_modules_compute_what_the_component_computes(case):
    comp = component(case)
    spec = _modules(comp.export_spec())
    out = {name: _run(m.module, m.example_inputs) for name, m in spec.items()}
    if isinstance(comp, LdmDenoiser):
        sample, timestep, context = spec["unet"].example_inputs
        (got,) = out["unet"]
        # the call the Karras wrapper makes: comp.model(x * c_in, t, cond)
        expected = comp.model(sample, timestep, Conditioning(embeds=context))
        assert got.shape == sample.shape and got.std() > 0.01
        _same(got, expected)
    elif isinstance(comp, LdmDecoder):
        (latent,) = spec["vae_decoder"].example_inputs
        (image,) = out["vae_decoder"]
        _same(image, comp.decode(Latent(latent)).pixels)
        (pixels,) = spec["vae_encoder"].example_inputs
        mean, std = out["vae_encoder"]
        _same(mean, comp.encode(Image(pixels)).samples)
        # encode(sample=True) draws noise of the latent's shape from the generator
        drawn = comp.encode(Image(pixels), sample=True, generator=torch.Generator().manual_seed(5))
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
        _same(mean + std * noise, drawn.samples)
    elif isinstance(comp, ClipTextEncoder):
        (ids,) = spec["text_encoder"].example_inputs
        states, pooled = out["text_encoder"]
        cond = comp(Tokens(ids))
        _same(states, cond.embeds)
        _same(pooled, cond.pooled)
        weights = torch.linspace(0.5, 1.5, ids.shape[1]).expand(ids.shape)
        # emphasis is the component's, applied to the module's output
        _same(apply_emphasis(states, weights), comp(Tokens(ids, weights=weights)).embeds)
    elif isinstance(comp, MiniLmTextEncoder):
        (ids,) = spec["text_encoder"].example_inputs
        (states,) = out["text_encoder"]
        adapter = spec["text_adapter"].module
        with torch.no_grad():
            _same(adapter(states), comp(Tokens(ids)).embeds)
            weights = torch.linspace(0.5, 1.5, ids.shape[1]).expand(ids.shape)
            weighted = adapter(apply_emphasis(states, weights))
        _same(weighted, comp(Tokens(ids, weights=weights)).embeds)
        assert out["text_adapter"][0].shape[-1] == comp.hidden_size
    else:
        raise TypeError(type(comp))


# -- ONNX round trip ---------------------------------------------------------------------------
OTHER_SIZE = {"batch_size": lambda n: 3}
"""How each dynamic axis changes for the second run (batch 2 -> 3, h x2, w x3, ...)."""
for _label in ("height", "latent_height", "sample_height"):
    OTHER_SIZE[_label] = lambda n: 2 * n
for _label in ("width", "latent_width", "sample_width"):
    OTHER_SIZE[_label] = lambda n: 3 * n


def _resize(x: torch.Tensor, axes: dict[int, str], seed: int) -> torch.Tensor:
    """A new input like ``x`` with its dynamic axes resized. Token ids: rows cycled and
    cropped to 40 tokens (the examples end every prompt before that); embeddings: sequence x2."""
    shape = list(x.shape)
    for axis, label in axes.items():
        if label == "sequence_length":
            shape[axis] = 40 if not x.is_floating_point() else 2 * shape[axis]
        else:
            shape[axis] = OTHER_SIZE[label](shape[axis])
    if not x.is_floating_point():
        rows = torch.arange(shape[0]) % x.shape[0]
        return x[rows][:, : shape[1]].contiguous()
    gen = torch.Generator().manual_seed(seed)
    fresh = torch.rand if bool(x.min() >= 0) else torch.randn
    return fresh(shape, generator=gen).to(x.dtype)


def _onnx_params() -> list:
    params = []
    for case, (_, names) in sorted(CASES.items()):
        marks = [pytest.mark.slow] if case in SLOW else []
        params += [pytest.param(case, name, id=f"{case}-{name}", marks=marks) for name in names]
    return params


@pytest.mark.parametrize(("case", "name"), _onnx_params())
def test_onnx_round_trip_with_dynamic_axes(case, name, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    comp = component(case)
    m = _modules(comp.export_spec())[name]
    modes = [(mod, mod.training) for own in _own_modules(comp) for mod in own.modules()]
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings, the legacy exporter's deprecation
        torch.onnx.export(
            m.module,
            m.example_inputs,
            str(path),
            dynamo=False,
            input_names=list(m.input_names),
            output_names=list(m.output_names),
            dynamic_axes={k: dict(v) for k, v in m.dynamic_axes.items()},
            opset_version=17,
        )
    # the exporter restores the wrapper's mode recursively: the component stays as it was
    assert all(mod.training == mode for mod, mode in modes)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(m.input_names)
    assert [o.name for o in session.get_outputs()] == list(m.output_names)
    other = tuple(
        _resize(x, dict(m.dynamic_axes.get(n, {})), seed=i)
        for i, (n, x) in enumerate(zip(m.input_names, m.example_inputs))
    )
    assert other[0].shape[0] == 3
    tolerance = TOLERANCE.get(name, TEXT_TOLERANCE)
    for label, inputs in (("example", m.example_inputs), ("other", other)):
        expected = _run(m.module, inputs)
        got = session.run(None, {n: x.numpy() for n, x in zip(m.input_names, inputs)})
        assert len(got) == len(expected)
        for out_name, g, e in zip(m.output_names, got, expected):
            assert tuple(g.shape) == tuple(e.shape), (label, out_name)
            error = float((torch.from_numpy(g) - e).abs().max())
            print(f"onnx {case}/{name}.{out_name} {label} {tuple(e.shape)}: max abs {error:.2e}")
            assert error <= tolerance, (label, out_name, error)
