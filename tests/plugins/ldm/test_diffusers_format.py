"""t2i_ldm.diffusers_format: a diffusers SD folder (written by diffusers' save_pretrained,
random weights) loads with every key accounted for and matches diffusers' outputs; the
same weights survive a trip through our CompVis single-file writer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from t2i.checkpoints import CheckpointError
from t2i_ldm.checkpoint import load_single_file, save_single_file
from t2i_ldm.diffusers_format import (
    load_diffusers_folder,
    load_diffusers_unet,
    load_diffusers_vae,
    unet_config_from_diffusers,
)
from t2i_ldm.loader import load_ldm

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")


def _randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.15)
    return model.eval()


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny SD2-style (linear projections, v-prediction) diffusers pipeline folder."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("sd_pipe")
    unet = _randomize(
        diffusers.UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            cross_attention_dim=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            sample_size=8,
        )
    )
    vae = _randomize(
        diffusers.AutoencoderKL(
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            norm_num_groups=8,
        )
    )
    text = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
        )
    )
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    diffusers.DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
    ).save_pretrained(root / "scheduler")
    (root / "tokenizer").mkdir()
    (root / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "scheduler": ["diffusers", "DDIMScheduler"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
            }
        )
    )
    return root, unet, vae, text


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 4, 8, 8, generator=g),
        torch.tensor([1.5, 801.0]),
        torch.randn(2, 6, 32, generator=g),
        torch.rand(2, 3, 16, 16, generator=g) * 2 - 1,
    )


def _rel(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def _check_against(models, unet, vae):
    x, t, ctx, img = _inputs()
    with torch.no_grad():
        assert _rel(models.unet(x, t, ctx), unet(x, t, ctx).sample) < 1e-4
        assert _rel(models.vae.decode(x), vae.decode(x).sample) < 1e-4
        assert _rel(models.vae.encode(img).mean, vae.encode(img).latent_dist.mean) < 1e-4


def test_folder_loads_and_matches_diffusers(sd_folder):
    root, unet, vae, text = sd_folder
    models = load_ldm(root)
    assert models.config.prediction_type == "v_prediction"
    assert models.config.schedule.beta_end == pytest.approx(0.012)
    assert models.unet.config.head_dim == 16 and models.unet.config.use_linear_projection
    _check_against(models, unet, vae)
    assert models.text_encoder_format == "hf_clip"
    saved = load_file(str(root / "text_encoder" / "model.safetensors"))
    # keys in HF CLIPTextModel form ``text_model.*`` whatever transformers version saved them
    assert sorted(models.text_encoder.keys()) == sorted(
        k if k.startswith("text_model.") else "text_model." + k for k in saved
    )
    key = "text_model.embeddings.token_embedding.weight"
    expected = text.state_dict().get(key, text.state_dict().get(key[len("text_model.") :]))
    torch.testing.assert_close(models.text_encoder.get(key), expected)
    assert models.extras["tokenizer_dir"] == root / "tokenizer"


def test_same_weights_through_a_compvis_single_file(sd_folder, tmp_path):
    root, unet, vae, _ = sd_folder
    models = load_diffusers_folder(root)
    path = save_single_file(
        tmp_path / "sd.safetensors", models.unet, models.vae, prediction_type="v_prediction"
    )
    _check_against(load_single_file(path), unet, vae)


def test_pickle_weights_need_allow_pickle(sd_folder, tmp_path):
    _, unet, _, _ = sd_folder
    unet.save_pretrained(tmp_path / "unet", safe_serialization=False)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_diffusers_unet(tmp_path / "unet")
    ours = load_diffusers_unet(tmp_path / "unet", allow_pickle=True)
    x, t, ctx, _ = _inputs(1)
    with torch.no_grad():
        assert _rel(ours(x, t, ctx), unet(x, t, ctx).sample) < 1e-4


def test_every_key_is_accounted_for(sd_folder, tmp_path):
    root, *_ = sd_folder
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text((root / "unet" / "config.json").read_text())
    state = load_file(str(root / "unet" / "diffusion_pytorch_model.safetensors"))
    state.pop("down_blocks.0.attentions.0.proj_in.weight")
    state["down_blocks.0.extra.weight"] = torch.zeros(2)
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        load_diffusers_unet(folder)
    assert info.value.missing == ["down_blocks.0.attentions.0.proj_in.weight"]
    assert info.value.unexpected == ["down_blocks.0.extra.weight"]


def test_legacy_vae_attention_names(sd_folder, tmp_path):
    root, _, vae, _ = sd_folder
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text((root / "vae" / "config.json").read_text())
    state = load_file(str(root / "vae" / "diffusion_pytorch_model.safetensors"))
    renames = {
        ".to_q.": ".query.",
        ".to_k.": ".key.",
        ".to_v.": ".value.",
        ".to_out.0.": ".proj_attn.",
    }
    legacy = {}
    for k, v in state.items():
        for new, old in renames.items():
            k = k.replace(new, old)
        legacy[k] = v
    assert any(".proj_attn." in k for k in legacy)
    save_file(legacy, str(folder / "diffusion_pytorch_model.safetensors"))
    ours = load_diffusers_vae(folder)
    x = _inputs()[0]
    with torch.no_grad():
        assert _rel(ours.decode(x), vae.decode(x).sample) < 1e-4


def test_unsupported_configs_are_refused():
    base = dict(
        block_out_channels=[32, 64],
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        attention_head_dim=2,
        norm_num_groups=8,
        cross_attention_dim=32,
    )
    assert unet_config_from_diffusers(base).num_heads == 2
    with pytest.raises(CheckpointError, match="class_embed_type"):
        unet_config_from_diffusers({**base, "class_embed_type": "timestep"})
    with pytest.raises(CheckpointError, match="SimpleCrossAttnDownBlock2D"):
        unet_config_from_diffusers(
            {**base, "down_block_types": ["SimpleCrossAttnDownBlock2D", "DownBlock2D"]}
        )


def test_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"model_index\.json"):
        load_ldm(tmp_path)
