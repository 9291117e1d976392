"""SDXL loading: the A1111 single-file round trip, the full-size configs against diffusers'
(on the meta device), and bad input (an SDXL file on the SD 1.x path and the reverse, mixed
or incomplete files): the right variant, or a clear error before any model is built."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from t2i.checkpoints import CheckpointError, CheckpointReader, open_checkpoint
from t2i_ldm.checkpoint import build_on_meta, detect_variant, load_single_file, save_single_file
from t2i_ldm.config import SDXL_REFINER_UNET, SDXL_UNET, get_preset
from t2i_ldm.keymaps import unet_key_map
from t2i_ldm.loader import load_ldm
from t2i_ldm.recipes import create_clip_text_encoder
from t2i_ldm.sdxl import (
    BASE_G_PREFIX,
    CLIP_L_PREFIX,
    REFINER_G_PREFIX,
    detect_sdxl,
    load_sdxl_single_file,
    save_sdxl_single_file,
)
from t2i_ldm.sdxl_text import clip_g_from_openclip
from t2i_ldm.unet import UNetModel

diffusers = pytest.importorskip("diffusers")
from safetensors.torch import load_file, save_file  # noqa: E402


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items()}


def test_single_file_layout_and_round_trip(tiny_sdxl, tmp_path):
    pipe, _folder, single = tiny_sdxl
    keys = open_checkpoint(single).keys()
    assert any(k.startswith(CLIP_L_PREFIX + "text_model.encoder.layers.") for k in keys)
    assert BASE_G_PREFIX + "transformer.resblocks.0.attn.in_proj_weight" in keys
    assert BASE_G_PREFIX + "text_projection" in keys
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    first = load_sdxl_single_file(single)
    again = save_sdxl_single_file(tmp_path / "again.safetensors", first.unet, first.vae)
    second = load_ldm(again)
    for a, b in ((first.unet, second.unet), (first.vae, second.vae)):
        sa, sb = _state(a), _state(b)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert second.config.vae.scaling_factor == 0.13025 and second.config.vae.force_upcast
    # bigG through OpenCLIP's packed layout and back equals diffusers' text_encoder_2
    g_reader = first.extras["text_encoder_2"]
    model, projection = clip_g_from_openclip(
        {k: g_reader.get(k) for k in g_reader.keys()}, head_dim=16
    )
    assert torch.equal(projection.weight, pipe.text_encoder_2.text_projection.weight)
    ids = torch.tensor([[49406 % model.config.vocab_size, 5, 6, model.config.eos_token_id]])
    with torch.no_grad():
        ours = model(input_ids=ids, output_hidden_states=True).hidden_states[-2]
        ref = pipe.text_encoder_2(input_ids=ids, output_hidden_states=True).hidden_states[-2]
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize(
    ("preset", "config", "kwargs"),
    [
        (
            SDXL_UNET,
            {"block_out_channels": (320, 640, 1280), "attention_head_dim": (5, 10, 20)},
            {
                "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                "transformer_layers_per_block": (1, 2, 10),
                "cross_attention_dim": 2048,
                "projection_class_embeddings_input_dim": 2816,
            },
        ),
        (
            SDXL_REFINER_UNET,
            {"block_out_channels": (384, 768, 1536, 1536), "attention_head_dim": (6, 12, 24, 24)},
            {
                "down_block_types": (
                    "DownBlock2D",
                    "CrossAttnDownBlock2D",
                    "CrossAttnDownBlock2D",
                    "DownBlock2D",
                ),
                "up_block_types": (
                    "UpBlock2D",
                    "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D",
                    "UpBlock2D",
                ),
                "transformer_layers_per_block": 4,
                "cross_attention_dim": 1280,
                "projection_class_embeddings_input_dim": 2560,
            },
        ),
    ],
    ids=["base", "refiner"],
)
def test_full_size_configs_match_diffusers(preset, config, kwargs):
    """Our SDXL presets name exactly diffusers' SDXL UNet tensors, with the same shapes."""
    with torch.device("meta"):
        theirs = diffusers.UNet2DConditionModel(
            sample_size=128,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            **config,
            **kwargs,
        )
    ours = build_on_meta(UNetModel, preset)
    mapping = unet_key_map(preset, ours.state_dict().keys())
    shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert set(mapping.values()) == set(shapes)
    assert all(tuple(v.shape) == shapes[mapping[k]] for k, v in ours.state_dict().items())
    assert get_preset("sdxl").unet is SDXL_UNET and get_preset("sdxl-refiner").vae.force_upcast


def test_sd1_loader_picks_sdxl_and_sdxl_loader_refuses_sd1(tiny_sdxl, tiny_sd, tmp_path):
    _, _, single = tiny_sdxl
    assert load_single_file(single).config.name == "sdxl"  # the SD1 path detects SDXL
    with pytest.raises(CheckpointError, match="it is SDXL"):
        detect_variant(open_checkpoint(single))
    _, sd_folder = tiny_sd
    sd = load_ldm(sd_folder)
    te = {k: sd.text_encoder.get(k) for k in sd.text_encoder.keys()}
    sd_file = save_single_file(tmp_path / "sd1.safetensors", sd.unet, sd.vae, text_encoder=te)
    with pytest.raises(CheckpointError, match=r"SD 1\.x/2\.x checkpoint, not SDXL"):
        load_sdxl_single_file(sd_file)
    assert load_ldm(sd_file).config.text_encoder == "clip_l"


def test_mixed_or_incomplete_sdxl_files_are_refused(tiny_sdxl, tmp_path):
    _, _, single = tiny_sdxl
    state = load_file(str(single))
    meta = open_checkpoint(single).metadata
    no_label = {k: v for k, v in state.items() if ".label_emb." not in k}
    save_file(no_label, str(tmp_path / "no_label.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="label_emb"):
        load_ldm(tmp_path / "no_label.safetensors")
    short = dict(state)
    del short["model.diffusion_model.input_blocks.1.0.in_layers.2.weight"]
    save_file(short, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"in_layers\.2\.weight"):
        load_ldm(tmp_path / "short.safetensors")
    with pytest.raises(CheckpointError, match="no model_ema"):
        load_ldm(single, use_ema=True)
    # a bigG of the wrong width for the UNet's context: refused when the encoder is built
    narrow = {k: v for k, v in state.items() if not k.startswith(CLIP_L_PREFIX)}
    save_file(narrow, str(tmp_path / "narrow.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="do not add up"):
        create_clip_text_encoder(checkpoint=tmp_path / "narrow.safetensors", head_dim=16)


def test_refiner_files_and_folders(tiny_sdxl_refiner):
    _pipe, folder, single = tiny_sdxl_refiner
    keys = open_checkpoint(single).keys()
    assert REFINER_G_PREFIX + "text_projection" in keys
    assert not any(k.startswith(CLIP_L_PREFIX) for k in keys)
    for source in (folder, single):
        models = load_ldm(source)
        assert models.config.name == "sdxl-refiner" and models.text_encoder is None
        assert models.config.unet.context_dim == 32
    variant = detect_sdxl(open_checkpoint(single))
    assert variant.config.text_encoder == "openclip_g"


def test_diffusers_folder_bad_input(tiny_sdxl, tmp_path):
    _, folder, _ = tiny_sdxl
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    cfg = json.loads((broken / "unet" / "config.json").read_text())
    cfg["addition_embed_type"] = "text_image"
    (broken / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="text_time"):
        load_ldm(broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(CheckpointError, match="addition_embed_type"):
        load_ldm(broken)


def test_reader_of_a_state_dict_is_detected():
    """Detection works on keys alone: a reader over an in-memory dict."""
    state = {"conditioner.embedders.0.model.token_embedding.weight": torch.zeros(4, 4)}
    with pytest.raises(CheckpointError, match="not a Stable Diffusion checkpoint"):
        detect_sdxl(CheckpointReader.from_state_dict(state))


@pytest.mark.parametrize(
    ("preset", "text_keys", "name"),
    [
        (SDXL_UNET, (CLIP_L_PREFIX + "text_model.final_layer_norm.weight", BASE_G_PREFIX), "sdxl"),
        (SDXL_REFINER_UNET, (REFINER_G_PREFIX,), "sdxl-refiner"),
    ],
    ids=["base", "refiner"],
)
def test_full_size_files_are_detected_from_their_shapes(preset, text_keys, name):
    """A file without our metadata (a real sd_xl_*_1.0.safetensors): the variant and the
    UNet's structure come from the keys and shapes alone (checked on meta tensors)."""
    unet = build_on_meta(UNetModel, preset)
    state = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    for key in text_keys:
        state[key if key.endswith("weight") else key + "token_embedding.weight"] = torch.empty(
            1, 1, device="meta"
        )
    variant = detect_sdxl(CheckpointReader.from_state_dict(state))
    cfg = variant.config.unet
    assert variant.config.name == name and variant.config.resolution == 1024
    assert variant.config.vae.scaling_factor == 0.13025
    rebuilt = build_on_meta(UNetModel, cfg)
    shapes = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert [cfg.depth_at(i) for i in range(cfg.num_levels) if cfg.has_attention(i)] == [
        preset.depth_at(i) for i in range(preset.num_levels) if preset.has_attention(i)
    ]
    assert cfg.middle_depth == preset.middle_depth and cfg.adm_in_channels == preset.adm_in_channels
