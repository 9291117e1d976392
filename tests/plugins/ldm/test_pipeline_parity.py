"""End to end against diffusers' StableDiffusionPipeline on random tiny weights.

A pipeline written by diffusers' ``save_pretrained``, and the same weights written as a
CompVis single file, both load into t2i's ``ldm`` recipe and give diffusers' image for the
same prompt, seed and scheduler (at most 2/255 per pixel, fp32 on CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i import Engine
from t2i.testing import make_manager
from t2i_ldm import plugin
from t2i_ldm.checkpoint import save_single_file
from t2i_ldm.recipes import load_models
from t2i_ldm.shapes_model import vocabulary_merges
from t2i_ldm.tokenizer import openai_clip_vocab

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

WORDS = "a red blue green cube sphere on top of the left right small large photo cat dog"


def _randomize(model, std=0.1):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


@pytest.fixture(scope="module")
def sd_pipeline(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("sd")
    tok_dir = root / "tok_src"
    tok_dir.mkdir()
    merges = vocabulary_merges([WORDS])
    vocab = openai_clip_vocab(merges)
    import json

    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    )
    tokenizer = transformers.CLIPTokenizer(
        str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77
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
            block_out_channels=(32, 64),
            layers_per_block=1,
            cross_attention_dim=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=2,
            sample_size=8,
        ),
        std=0.05,
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
        std=0.05,
    )
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        timestep_spacing="linspace",
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    folder = root / "pipeline"
    pipe.save_pretrained(folder, safe_serialization=True)
    models = load_models(folder)
    te = {k: models.text_encoder.get(k) for k in models.text_encoder.keys()}
    single = save_single_file(
        root / "model.safetensors",
        models.unet,
        models.vae,
        text_encoder=te,
        prediction_type="epsilon",
    )
    return pipe, folder, single


def _reference(pipe, prompt, negative, seed, steps=6, size=32, scale=6.0):
    out = pipe(
        prompt,
        negative_prompt=negative,
        num_inference_steps=steps,
        guidance_scale=scale,
        height=size,
        width=size,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return np.round(out.images[0] * 255).astype(np.int16)


def _ours(checkpoint, prompt, negative, seed, steps=6, size=32, scale=6.0, **build):
    manager = make_manager(plugin)
    pipe = Engine.build("ldm", plugins=manager, checkpoint=str(checkpoint), **build)
    result = pipe(
        prompt,
        negative_prompt=negative,
        steps=steps,
        cfg_scale=scale,
        seed=seed,
        width=size,
        height=size,
        sampler="euler",
        schedule="linspace",
    )
    return np.asarray(result.images[0]).astype(np.int16)


@pytest.mark.parametrize("source", ["diffusers_folder", "single_file"])
def test_same_image_as_diffusers(sd_pipeline, source):
    pipe, folder, single = sd_pipeline
    seed = int(torch.randint(0, 2**31, (1,)))
    prompt, negative = "a red cube on top of a blue sphere", "a small dog"
    expected = _reference(pipe, prompt, negative, seed)
    if source == "diffusers_folder":
        got = _ours(folder, prompt, negative, seed)
    else:
        got = _ours(
            single, prompt, negative, seed, tokenizer=folder / "tokenizer", text_head_dim=16
        )
    assert got.shape == expected.shape
    diff = np.abs(got - expected).max()
    assert diff <= 2, f"max pixel difference {diff}/255"
    assert expected.std() > 1  # the image is not flat: the comparison means something


def test_single_file_without_vocabulary_uses_clips(sd_pipeline, monkeypatch):
    """A single file carries no vocabulary: the shipped CLIP merges list is used, and a text
    encoder with another vocabulary (this tiny one) is reported, not crashed into."""
    _, _, single = sd_pipeline
    monkeypatch.delenv("T2I_CLIP_TOKENIZER", raising=False)
    monkeypatch.delenv("T2I_CLIP_BPE", raising=False)
    from t2i.graph.errors import NodeExecutionError

    with pytest.raises(NodeExecutionError, match="tokenizer does not match"):
        _ours(single, "a cat", "", 1, text_head_dim=16)
