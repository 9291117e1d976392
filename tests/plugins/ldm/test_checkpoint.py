"""t2i_ldm.checkpoint: CompVis/A1111 single files: round trip, variant detection, EMA,
dtypes, and the errors for files that do not fit."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
from safetensors.torch import save_file

from t2i.checkpoints import CheckpointError, CheckpointReader
from t2i_ldm.checkpoint import (
    detect_variant,
    load_single_file,
    load_vae_file,
    save_single_file,
    single_file_state,
    split_checkpoint,
)
from t2i_ldm.config import SD1_UNET, SD2_UNET, SD_VAE, TINY_UNET, TINY_UNET_SD2, TINY_VAE
from t2i_ldm.unet import UNetModel
from t2i_ldm.vae import AutoencoderKL


def _models(unet_cfg=TINY_UNET, seed=0):
    torch.manual_seed(seed)
    unet, vae = UNetModel(unet_cfg).eval(), AutoencoderKL(TINY_VAE).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.1)
    return unet, vae


def _outputs(unet, vae, seed=1):
    g = torch.Generator().manual_seed(seed)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10.0, 600.0]), ctx), vae.decode(x)


def test_single_file_round_trip_with_metadata(tmp_path):
    unet, vae = _models(TINY_UNET_SD2)
    text = {"text_model.embeddings.token_embedding.weight": torch.randn(10, 8)}
    path = save_single_file(
        tmp_path / "tiny.safetensors",
        unet,
        vae,
        text_encoder=text,
        prediction_type="v_prediction",
        name="tiny-sd2-v",
    )
    models = load_single_file(path)
    assert models.unet.config == unet.config and models.vae.config == vae.config
    assert models.config.prediction_type == "v_prediction"
    assert models.text_encoder_format == "hf_clip"
    assert models.text_encoder.keys() == list(text)
    torch.testing.assert_close(models.text_encoder.get(next(iter(text))), next(iter(text.values())))
    for a, b in zip(_outputs(unet, vae), _outputs(models.unet, models.vae)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_round_trip_without_metadata_needs_config_for_unknown_widths(tmp_path):
    unet, vae = _models()
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in single_file_state(unet, vae).items()}, str(path))
    with pytest.raises(CheckpointError, match="pass unet_config="):
        load_single_file(path)
    models = load_single_file(path, unet_config=TINY_UNET, vae_config=TINY_VAE)
    for a, b in zip(_outputs(unet, vae), _outputs(models.unet, models.vae)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("file_dtype", "model_dtype"), [(torch.float16, torch.float32), (torch.float32, torch.float16)]
)
def test_dtype_conversion(tmp_path, file_dtype, model_dtype):
    unet, vae = _models()
    path = save_single_file(tmp_path / "m.safetensors", unet, vae, dtype=file_dtype)
    models = load_single_file(path, dtype=model_dtype)
    assert {p.dtype for p in models.unet.parameters()} == {model_dtype}
    key = "input_blocks.1.0.in_layers.2.weight"
    expected = unet.state_dict()[key].to(file_dtype).to(model_dtype)
    torch.testing.assert_close(models.unet.state_dict()[key], expected, rtol=0, atol=0)


def test_ema_copy_is_ignored_by_default_and_used_on_request(tmp_path):
    unet, vae = _models(seed=0)
    ema, _ = _models(seed=5)
    state = single_file_state(unet, vae)
    state.update(
        {"model_ema.diffusion_model" + k.replace(".", ""): v for k, v in ema.state_dict().items()}
    )
    state["model_ema.num_updates"] = torch.tensor(7)
    path = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    kw = dict(unet_config=TINY_UNET, vae_config=TINY_VAE)
    plain = load_single_file(path, **kw)
    with_ema = load_single_file(path, use_ema=True, **kw)
    torch.testing.assert_close(_outputs(plain.unet, vae)[0], _outputs(unet, vae)[0])
    torch.testing.assert_close(_outputs(with_ema.unet, vae)[0], _outputs(ema, vae)[0])
    assert not torch.allclose(_outputs(plain.unet, vae)[0], _outputs(ema, vae)[0])


def _shape_reader(unet_cfg, text_prefix: str, metadata=None) -> CheckpointReader:
    """A reader with real SD key names and shapes that never allocates a tensor."""
    with torch.device("meta"):
        unet, vae = UNetModel(unet_cfg), AutoencoderKL(SD_VAE)
    shapes = {f"model.diffusion_model.{k}": tuple(v.shape) for k, v in unet.state_dict().items()}
    shapes.update({f"first_stage_model.{k}": tuple(v.shape) for k, v in vae.state_dict().items()})
    shapes[text_prefix + "token_embedding.weight"] = (49408, 1024)
    shapes["alphas_cumprod"] = (1000,)

    def fail(key):
        raise AssertionError("detection must not read tensors")

    return CheckpointReader(
        list(shapes), shapes.__getitem__, lambda k: torch.float16, fail, metadata=metadata
    )


def test_detects_sd1():
    v = detect_variant(_shape_reader(SD1_UNET, "cond_stage_model.transformer.text_model."))
    assert v.config.name == "sd1" and v.config.prediction_type == "epsilon"
    assert v.config.unet == SD1_UNET and v.config.vae == SD_VAE
    assert v.text_encoder_format == "hf_clip"


def test_detects_sd2_variants(tmp_path):
    reader = _shape_reader(SD2_UNET, "cond_stage_model.model.")
    v = detect_variant(reader)
    assert (v.config.name, v.config.prediction_type, v.config.resolution) == (
        "sd2-768-v",
        "v_prediction",
        768,
    )
    assert v.config.unet == SD2_UNET and v.text_encoder_format == "open_clip"
    base = _shape_reader(SD2_UNET, "cond_stage_model.model.", {"global_step": 875000})
    assert detect_variant(base).config.name == "sd2-512-eps"
    forced = detect_variant(reader, prediction_type="epsilon")
    assert forced.config.name == "sd2-512-eps"
    yaml = tmp_path / "v2.yaml"
    yaml.write_text('model:\n  params:\n    parameterization: "v"\n')
    assert detect_variant(base, yaml_path=yaml).config.prediction_type == "v_prediction"
    yaml.write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert detect_variant(reader, yaml_path=yaml).config.prediction_type == "epsilon"


def test_split_checkpoint_hands_back_text_encoder_slice():
    parts = split_checkpoint(_shape_reader(SD2_UNET, "cond_stage_model.model."))
    assert parts["text_encoder"].keys() == ["token_embedding.weight"]
    assert "input_blocks.0.0.weight" in parts["unet"]
    assert "encoder.conv_in.weight" in parts["vae"]
    assert parts["variant"].config.name == "sd2-768-v"


def _write(state: dict, path) -> None:
    meta = {
        "t2i_ldm.unet_config": json.dumps(attrs.asdict(TINY_UNET)),
        "t2i_ldm.vae_config": json.dumps(attrs.asdict(TINY_VAE)),
    }
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path):
    unet, vae = _models()
    path = tmp_path / "bad.safetensors"
    state = single_file_state(unet, vae)
    del state["model.diffusion_model.middle_block.0.emb_layers.1.weight"]
    _write(state, path)
    with pytest.raises(CheckpointError) as info:
        load_single_file(path)
    assert info.value.missing == ["middle_block.0.emb_layers.1.weight"]
    assert "does not fit the UNet" in str(info.value) and "fix:" in str(info.value)

    state = single_file_state(unet, vae)
    state["first_stage_model.quant_conv.bias"] = torch.zeros(3)
    state["first_stage_model.extra.weight"] = torch.zeros(3)
    _write(state, path)
    with pytest.raises(CheckpointError) as info:
        load_single_file(path)
    assert info.value.unexpected == ["extra.weight"]
    assert [m[0] for m in info.value.mismatched] == ["quant_conv.bias"]
    assert "quant_conv.bias (3,) vs (8,)" in str(info.value)


def test_other_family_truncated_and_pickle_files_fail_clearly(tmp_path):
    other = tmp_path / "gan.safetensors"
    save_file(
        {"generator.fc.weight": torch.zeros(4, 4), "mapping.0.bias": torch.zeros(4)}, str(other)
    )
    with pytest.raises(CheckpointError, match="not a Stable Diffusion"):
        load_single_file(other)

    unet, vae = _models()
    good = save_single_file(tmp_path / "good.safetensors", unet, vae)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_single_file(truncated)

    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": single_file_state(unet, vae), "global_step": 3}, ckpt)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_single_file(ckpt)
    models = load_single_file(ckpt, allow_pickle=True, unet_config=TINY_UNET, vae_config=TINY_VAE)
    torch.testing.assert_close(_outputs(models.unet, models.vae)[0], _outputs(unet, vae)[0])


def test_use_ema_without_ema_copy_is_an_error(tmp_path):
    unet, vae = _models()
    path = save_single_file(tmp_path / "m.safetensors", unet, vae)
    with pytest.raises(CheckpointError, match="no complete model_ema"):
        load_single_file(path, use_ema=True)


@pytest.mark.parametrize("prefix", ["", "first_stage_model.", "vae."])
def test_standalone_vae_file(tmp_path, prefix):
    _, vae = _models()
    path = tmp_path / "vae.safetensors"
    state = {prefix + k: v.contiguous() for k, v in vae.state_dict().items()}
    state["model_ema.decay"] = torch.tensor(0.999)  # released VAE files carry EMA bookkeeping
    save_file(state, str(path))
    loaded = load_vae_file(path, vae_config=TINY_VAE)
    assert loaded.config == vae.config
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(z), vae.decode(z), rtol=0, atol=0)


def test_standalone_vae_file_in_diffusers_names(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=8,
    ).eval()
    path = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = load_vae_file(path, vae_config=TINY_VAE)
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(ours.decode(z), ref.decode(z).sample, rtol=1e-4, atol=1e-5)
    with pytest.raises(CheckpointError, match="not a KL VAE"):
        other = tmp_path / "other.safetensors"
        save_file({"generator.fc.weight": torch.zeros(2, 2)}, str(other))
        load_vae_file(other)
