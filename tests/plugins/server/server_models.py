"""Tiny random-weight model files in the real layouts, for the models-folder tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SD_WORDS = "a red blue cube sphere cat dog photo of the on top left right"


def tiny_sd_file(path: Path, tokenizer_dir: Path, *, text_layers: int = 1) -> Path:
    """A CompVis-layout SD single file (tiny UNet, VAE and CLIP text model of ``text_layers``
    layers, one head of 64 so that the ``ldm`` recipe's defaults fit) and its CLIP
    vocabulary in ``tokenizer_dir``."""
    pytest.importorskip("t2i_ldm")
    import attrs
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from t2i_ldm.checkpoint import save_single_file
    from t2i_ldm.config import TINY_UNET, VAEConfig
    from t2i_ldm.shapes_model import write_tokenizer
    from t2i_ldm.unet import UNetModel
    from t2i_ldm.vae import AutoencoderKL

    torch.manual_seed(0)
    tok = write_tokenizer(tokenizer_dir, [SD_WORDS])
    unet = UNetModel(attrs.evolve(TINY_UNET, model_channels=16, context_dim=64)).eval()
    vae = AutoencoderKL(
        VAEConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, norm_groups=8)
    ).eval()
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=tok.vocab_size,
            hidden_size=64,
            intermediate_size=64,
            num_hidden_layers=text_layers,
            num_attention_heads=1,
            max_position_embeddings=77,
        )
    )
    te = {k if k.startswith("text_model.") else f"text_model.{k}": v
          for k, v in text.state_dict().items()}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_single_file(path, unet, vae, text_encoder=te, prediction_type="epsilon")


def tiny_dalle_folder(folder: Path) -> Path:
    """A dalle-shapes-layout folder (``dalle.json``, dVAE, transformer), random weights:
    64 px images, a 16x16 token grid (as tests/plugins/dalle's ``dalle_folder``)."""
    pytest.importorskip("t2i_dalle")
    import attrs
    import torch
    from t2i_dalle.checkpoint import TRANSFORMER_FILE, write_spec
    from t2i_dalle.dvae import DVAEConfig
    from t2i_dalle.text import caption_words
    from t2i_dalle.trainables import DVAESchedule, DVAETrainable
    from t2i_dalle.transformer import DalleTransformer, TransformerConfig

    from t2i.checkpoints import save_safetensors

    torch.manual_seed(0)
    dvae = DVAEConfig(group_count=3, n_hid=8, n_blk_per_group=1, n_init=8, vocab_size=16)
    words = caption_words()
    DVAETrainable(dvae, DVAESchedule(), training={"words": words}).save(folder)
    config = TransformerConfig(
        text_vocab=4 + len(words), text_len=24, image_vocab=16, grid=16, width=32, depth=2, heads=2
    )
    save_safetensors(DalleTransformer(config).state_dict(), folder / TRANSFORMER_FILE)
    write_spec(folder, dvae=attrs.asdict(dvae), transformer=attrs.asdict(config),
               words=words, training={})  # fmt: skip
    return folder


def diffusers_folder(folder: Path, class_name: str) -> Path:
    """A diffusers pipeline folder's skeleton: ``model_index.json`` and a UNet safetensors
    (detection reads only these)."""
    import torch

    from t2i.checkpoints import save_safetensors

    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    save_safetensors({"conv_in.weight": torch.zeros(4, 4, 3, 3)},
                     folder / "unet" / "diffusion_pytorch_model.safetensors")  # fmt: skip
    return folder


def sd_ckpt(path: Path) -> Path:
    """A ``torch.save`` zip holding ``{"state_dict": {SD keys}}`` (an A1111 ``.ckpt``)."""
    import torch

    state = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 4, 3, 3)}
    torch.save({"state_dict": state}, path)
    return path


def perturbed_vae(sd, out, *, latent_channels: int = 4):
    """The tiny SD file's VAE with noise added (or a 16-channel one), saved at ``out``."""
    import attrs
    import torch
    from safetensors.torch import save_file

    from t2i_ldm.checkpoint import load_vae_file
    from t2i_ldm.recipes import load_models
    from t2i_ldm.vae import AutoencoderKL

    config = load_models(sd).vae.config
    if latent_channels == 4:
        vae = load_vae_file(sd, vae_config=config)
    else:
        vae = AutoencoderKL(
            attrs.evolve(config, z_channels=latent_channels, embed_dim=latent_channels)
        )
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, out)
    return out


def random_controlnet(sd, out):
    """A ControlNet for the tiny SD file's UNet (hint stack of two widths: the tiny VAE's
    factor 2), weights random enough to change the image, in A1111's layout, at ``out``."""
    import torch

    from t2i_ldm.controlnet import ControlNetModel
    from t2i_ldm.controlnet_checkpoint import save_controlnet
    from t2i_ldm.recipes import load_models

    torch.manual_seed(3)
    net = ControlNetModel(load_models(sd).unet.config, 3, (16, 32))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_controlnet(out, net)


def random_ip_adapter(sd, out):
    """A plain IP-Adapter for the tiny SD file's UNet at ``out`` (h94's key layout, random
    weights that move the image) and a tiny CLIP vision tower in ``image_encoder/`` beside."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from t2i_ldm.ip_adapter import cross_attentions
    from t2i_ldm.recipes import load_models

    unet = load_models(sd).unet
    g = torch.Generator().manual_seed(7)
    width, embed = unet.config.context_dim, 24
    state = {
        "image_proj.proj.weight": torch.randn(4 * width, embed, generator=g) * 0.3,
        "image_proj.proj.bias": torch.randn(4 * width, generator=g) * 0.3,
        "image_proj.norm.weight": torch.ones(width),
        "image_proj.norm.bias": torch.zeros(width),
    }
    for i, (_, attn) in enumerate(cross_attentions(unet)):
        for leaf in ("to_k_ip", "to_v_ip"):
            w = torch.randn(attn.to_k.out_features, width, generator=g) * 0.5
            state[f"ip_adapter.{2 * i + 1}.{leaf}.weight"] = w
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                              num_attention_heads=2, image_size=224, patch_size=32,
                              projection_dim=embed)  # fmt: skip
    torch.manual_seed(8)
    CLIPVisionModelWithProjection(config).save_pretrained(out.parent / "image_encoder")
    return out
