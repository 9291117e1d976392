"""Shared fixtures of the LDM tests: tiny random SD pipelines written by diffusers.

``tiny_sd`` (4-channel UNet) and ``tiny_sd_inpaint`` (9-channel inpainting UNet) are
``(diffusers pipeline, saved folder)`` pairs on random weights: CLIP text width 32, a
two-level UNet, a two-level VAE (factor 2), so a 32x32 image has a 16x16 latent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

WORDS = "a red blue green cube sphere on top of the left right small large photo cat dog"


def _randomize(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


def tiny_sd_parts(root: Path, *, in_channels: int = 4, vae_std: float = 0.05) -> dict:
    """Random tiny SD components in diffusers' classes (tokenizer files under ``root``);
    ``vae_std``: the VAE's weight scale (0.1 gives a decoder that shows the latents'
    differences; at 0.05 it maps them all to grey)."""
    import diffusers
    import transformers

    from t2i_ldm.shapes_model import vocabulary_merges
    from t2i_ldm.tokenizer import openai_clip_vocab

    merges = vocabulary_merges([WORDS])
    vocab = openai_clip_vocab(merges)
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = transformers.CLIPTokenizer(
        str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=77
    )
    text = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    ).eval()
    unet = _randomize(
        diffusers.UNet2DConditionModel(
            in_channels=in_channels,
            block_out_channels=(32, 64),
            layers_per_block=1,
            cross_attention_dim=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=2,
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
            latent_channels=4,
        ),
        std=vae_std,
    )
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        timestep_spacing="linspace",
    )
    return {
        "vae": vae,
        "text_encoder": text,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
    }


def save_tiny_sd(
    root: Path,
    pipeline_class: str = "StableDiffusionPipeline",
    in_channels: int = 4,
    vae_std: float = 0.05,
):
    """``(pipeline, folder)``: the tiny random SD pipeline saved under ``root`` (seed 0)."""
    import diffusers

    torch.manual_seed(0)
    parts = tiny_sd_parts(root / "tok_src", in_channels=in_channels, vae_std=vae_std)
    cls = getattr(diffusers, pipeline_class)
    pipe = cls(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    folder = root / "pipeline"
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe, folder


@pytest.fixture(scope="session")
def make_tiny_sd():
    """``make(root, *, vae_std=0.05) -> (StableDiffusionPipeline, folder)``, saved under root."""
    pytest.importorskip("diffusers")
    return lambda root, *, vae_std=0.05: save_tiny_sd(root, "StableDiffusionPipeline", 4, vae_std)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """``(StableDiffusionPipeline, folder)`` on random tiny weights."""
    pytest.importorskip("diffusers")
    return save_tiny_sd(tmp_path_factory.mktemp("tiny_sd"), "StableDiffusionPipeline", 4)


@pytest.fixture(scope="session")
def tiny_sd_inpaint(tmp_path_factory):
    """``(StableDiffusionInpaintPipeline, folder)``: a 9-channel inpainting UNet."""
    pytest.importorskip("diffusers")
    return save_tiny_sd(
        tmp_path_factory.mktemp("tiny_sd_inpaint"), "StableDiffusionInpaintPipeline", 9
    )


def _tiny_clip(vocab: dict, *, projection: bool = False, act: str = "quick_gelu"):
    import transformers

    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=32,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"] if not projection else 0,
    )
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return cls(config).eval()


def tiny_sdxl_parts(
    root: Path, *, refiner: bool = False, vae_std: float = 0.1, unet_std: float = 0.3
) -> dict:
    """Random tiny SDXL components in diffusers' classes: CLIP-L and bigG of width 32 each
    (bigG with a projection, OpenCLIP's GELU, padding "!"), a two-level UNet with no
    attention at the first level, transformer depth 2 at the second, ``text_time``
    micro-conditioning (6 numbers, the refiner 5, 8 wide), a factor-2 VAE (0.13025).
    ``unet_std`` 0.3 makes the UNet's prediction move the image (at 0.05 the first noise
    dominates, and a refiner stage would not show)."""
    import diffusers
    import transformers

    from t2i_ldm.shapes_model import vocabulary_merges
    from t2i_ldm.tokenizer import openai_clip_vocab

    merges = vocabulary_merges([WORDS])
    vocab = openai_clip_vocab(merges)
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    files = (str(root / "vocab.json"), str(root / "merges.txt"))
    tokenizer = transformers.CLIPTokenizer(*files, model_max_length=77)
    tokenizer_2 = transformers.CLIPTokenizer(*files, model_max_length=77, pad_token="!")
    text_2 = _tiny_clip(vocab, projection=True, act="gelu")
    context = 32 if refiner else 64
    unet = _randomize(
        diffusers.UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=32 + (5 if refiner else 6) * 8,
            cross_attention_dim=context,
            norm_num_groups=8,
            sample_size=16,
        ),
        std=unet_std,
    )
    vae = _randomize(
        diffusers.AutoencoderKL(
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=4,
            scaling_factor=0.13025,
            force_upcast=True,
        ),
        std=vae_std,
    )
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        timestep_spacing="linspace",
    )
    parts = {"vae": vae, "unet": unet, "scheduler": scheduler}
    parts.update(text_encoder_2=text_2, tokenizer_2=tokenizer_2)
    if refiner:
        return {**parts, "text_encoder": None, "tokenizer": None}
    return {**parts, "text_encoder": _tiny_clip(vocab), "tokenizer": tokenizer}


def save_tiny_sdxl(root: Path, *, refiner: bool = False):
    """``(pipeline, folder, single_file)``: a tiny random SDXL base (``StableDiffusionXL
    Pipeline``) or refiner (``StableDiffusionXLImg2ImgPipeline``) saved under ``root`` as a
    diffusers folder and as an A1111-layout single file (seed 0)."""
    import diffusers

    from t2i_ldm.recipes import load_models
    from t2i_ldm.sdxl import save_sdxl_single_file

    torch.manual_seed(1 if refiner else 0)
    parts = tiny_sdxl_parts(root / "tok_src", refiner=refiner)
    if refiner:
        pipe = diffusers.StableDiffusionXLImg2ImgPipeline(
            **parts, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False
        )
    else:
        pipe = diffusers.StableDiffusionXLPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    folder = root / "pipeline"
    pipe.save_pretrained(folder, safe_serialization=True)
    models = load_models(folder)
    single = save_sdxl_single_file(
        root / "model.safetensors",
        models.unet,
        models.vae,
        clip_l=parts["text_encoder"],
        clip_g=parts["text_encoder_2"].text_model,
        projection=parts["text_encoder_2"].text_projection,
    )
    return pipe, folder, single


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    """``(StableDiffusionXLPipeline, folder, single_file)`` on random tiny weights."""
    pytest.importorskip("diffusers")
    return save_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture(scope="session")
def tiny_sdxl_refiner(tmp_path_factory):
    """``(StableDiffusionXLImg2ImgPipeline, folder, single_file)``: a tiny random refiner."""
    pytest.importorskip("diffusers")
    return save_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl_refiner"), refiner=True)


def random_tiny_vae(seed: int, *, latent_channels: int = 4, sample_size: int = 32, std=0.1):
    """A diffusers ``AutoencoderKL`` of the tiny pipelines' shape (two levels, factor 2, eight
    groups) on random weights of scale ``std``; ``sample_size`` is its tile size."""
    import diffusers

    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=latent_channels,
        sample_size=sample_size,
    )
    return _randomize(vae, std)


@pytest.fixture(scope="session")
def make_tiny_vae():
    """``make(seed, *, latent_channels=4, sample_size=32, std=0.1)``: :func:`random_tiny_vae`."""
    pytest.importorskip("diffusers")
    return random_tiny_vae
